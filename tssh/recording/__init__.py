"""Session recording client: asciicast encoding, the recorder wire protocol, the uploader.

- ``asciicast``: the stream's format (header, events), pure.
- ``wire``: the recorder protocol's state (h2c probe and upload with acks, HTTP/1.1 with
  ``100 Continue``), sans-I/O.
- ``targets``: which recorder addresses a rule's ``recorder`` selectors name, pure.
- ``uploader``: the asyncio driver a session uses (``start_recording``); its docstring shows how.
- ``local``: the debug fallback to a local ``.cast`` file.

Nothing is re-exported here, so that importing a pure module pulls in no I/O.
"""
