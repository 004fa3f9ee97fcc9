"""The SSH daemon: listeners, authorization, sessions, control socket."""
