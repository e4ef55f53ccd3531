"""S3 for tests: fake credentials, a moto server on 127.0.0.1, and a faulty proxy.

``moto_server`` runs moto's ThreadedMotoServer in this process for the whole
session (an ephemeral port on 127.0.0.1; nothing leaves the machine).
``FaultProxy`` sits between a client and that server and cuts the
connection in the middle of UploadPart requests from a given part number on:
a real network failure in the middle of a multipart upload, while every
other request (including AbortMultipartUpload) still goes through.
``DenyingEndpoint`` answers every request ``403 AccessDenied``, as S3 does
when a bucket or IAM policy denies the caller.
"""

from __future__ import annotations

import http.client
import itertools
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never read the developer's profiles, never ask an instance metadata service.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_buckets = itertools.count()


def aws_env(endpoint: str | None = None) -> dict[str, str]:
    """Environment for a child process: fake credentials and, optionally, the
    moto endpoint through boto3's standard ``AWS_ENDPOINT_URL_S3``."""
    env = dict(FAKE_AWS_ENV)
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    return env


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process sees only fake credentials and no AWS settings of its own."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on 127.0.0.1."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 client for the test's own checks, independent of the environment."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def new_bucket(client: Any) -> str:
    """Create a bucket with a name no other test uses."""
    name = f"snapmgr-test-{os.getpid()}-{next(_buckets)}"
    client.create_bucket(Bucket=name)
    return name


def bucket_keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def pending_uploads(client: Any, bucket: str) -> list[str]:
    """Keys with a multipart upload that was neither completed nor aborted."""
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [upload["Key"] for upload in uploads]


HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}


class LoopbackServer:
    """An HTTP server on 127.0.0.1 in a daemon thread, for a ``with`` block."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class FaultProxy(LoopbackServer):
    """Forwards HTTP to ``target``; drops the connection mid-body on UploadPart
    requests whose part number is ``fail_from_part`` or more."""

    def __init__(self, target: str, fail_from_part: int) -> None:
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.fail_from_part = fail_from_part
        self.cut: list[int] = []
        self.forwarded = 0
        self._serve(self._handler())

    def _should_cut(self, method: str, path: str) -> int | None:
        query = parse_qs(urlsplit(path).query)
        if method != "PUT" or "uploadId" not in query or "partNumber" not in query:
            return None
        number = int(query["partNumber"][0])
        return number if number >= self.fail_from_part else None

    def rewrite(self, method: str, path: str, body: bytes) -> bytes:
        """The response body passed back to the client; subclasses may edit it."""
        return body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                part = proxy._should_cut(self.command, self.path)
                if part is not None:
                    # Take a little of the body, then vanish: what a dead link looks like.
                    self.rfile.read(min(length, 256 * 1024))
                    proxy.cut.append(part)
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                upstream = http.client.HTTPConnection(
                    proxy.target_host, proxy.target_port, timeout=60
                )
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = proxy.rewrite(self.command, self.path, response.read())
                    self.send_response_only(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() in HOP_HEADERS:
                            continue
                        if key.lower() == "content-length" and self.command != "HEAD":
                            continue
                        self.send_header(key, value)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    proxy.forwarded += 1
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler


class DenyingEndpoint(LoopbackServer):
    """An S3 endpoint answering every request ``403 AccessDenied``: what S3 says
    when a bucket or IAM policy denies the caller."""

    BODY = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        b"<Message>Access Denied</Message><RequestId>0</RequestId></Error>"
    )

    def __init__(self) -> None:
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def deny(self) -> None:
                endpoint.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(DenyingEndpoint.BODY)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(DenyingEndpoint.BODY)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = deny

        self._serve(Handler)
