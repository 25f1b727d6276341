"""Ray Serve deployments: thin shims over the `chatapp` core."""
