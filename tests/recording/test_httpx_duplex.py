"""Why the uploader drives h2 itself: httpx's HTTP/2 is not full duplex.

If this test starts failing, httpx delivers response headers while the request body is still
open, and the v2 upload could be built on it instead of h2 directly.
"""

import asyncio
from collections.abc import AsyncIterator

import httpx

from tests.recording.fake_recorder import FakeRecorder


async def test_httpx_reads_no_response_before_the_request_body_ends() -> None:
    async with FakeRecorder() as recorder:
        headers_seen = asyncio.Event()
        waited_in_vain = False

        async def body() -> AsyncIterator[bytes]:
            nonlocal waited_in_vain
            yield b'{"version": 2, "width": 80, "height": 24}\n'
            try:
                await asyncio.wait_for(headers_seen.wait(), 0.5)
            except TimeoutError:
                waited_in_vain = True
            yield b'[0.1, "o", "x"]\n'

        url = f"http://127.0.0.1:{recorder.port}/v2/record"
        async with (
            httpx.AsyncClient(http1=False, http2=True) as client,
            client.stream("POST", url, content=body()) as response,
        ):
            headers_seen.set()
            assert response.http_version == "HTTP/2"
            assert response.status_code == 200
            answer = await response.aread()
        assert waited_in_vain  # the headers came only after the body had ended
        assert b'"ack"' in answer  # the recorder still answered, once the body had ended
        assert recorder.uploads[0].complete
