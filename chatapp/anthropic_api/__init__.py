"""Anthropic's Messages API on ChatApp (`POST /v1/messages`): the wire models
(`protocol`), the pure conversion between them and ChatApp's chat types (`convert`), and
Anthropic's error envelope (`errors`). The HTTP route is
`deployments/ingress/routes/messages.py`."""
