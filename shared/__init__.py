"""A multi-region Azure OpenAI gateway: one endpoint, many regional deployments."""
