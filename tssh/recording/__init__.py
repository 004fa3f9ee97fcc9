"""Session recording client: asciicast encoding, the recorder wire protocol, the uploader."""
