"""The model behind the agent: one protocol, several implementations."""
