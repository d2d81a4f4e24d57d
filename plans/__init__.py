"""The control-plane contract: versioned plan and result models."""
