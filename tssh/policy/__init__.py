"""The Tailscale policy file: HuJSON parsing, model, validation, evaluation. Pure code, no I/O."""
