"""Session recording client: asciicast encoding, the recorder wire protocol, the uploader.

- ``asciicast``: the stream's format (header, events), pure.
- ``wire``: the recorder protocol's state (h2c probe and upload with acks, HTTP/1.1 with
  ``100 Continue``), sans-I/O.
- ``targets``: which recorder addresses a rule's ``recorder`` selectors name, pure.
- ``model``: the values every layer passes around (options, attempts, stats).
- ``sink``: ``RecordingSink``, what a session writes its recording into, pure.
- ``transport``: one recorder connection, dial, probe and upload (v2 or v1), a ``Destination``.
- ``uploader``: the asyncio driver (``start_recording``, a ``Recording``): failover, buffer,
  backpressure; its docstring shows how.
- ``worker``, ``worker_protocol``, ``worker_client``, ``outbox``: the recording worker
  process (a ``RecordingJob`` per recording), the messages that cross to it, the daemon's
  side of it (``WorkerRecording``), and the non-blocking writes both ends use.
- ``local``: the debug fallback to a local ``.cast`` file.

Nothing is re-exported here, so that importing a pure module pulls in no I/O.
"""
