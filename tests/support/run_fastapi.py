"""Runs the FastAPI example on 127.0.0.1, a port the OS picks; prints `PORT <n>` first."""

import socket
import sys

import uvicorn

sys.path.insert(0, sys.argv[1])
from app import app  # noqa: E402

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)  # connections queue from now on, before uvicorn starts accepting
print(f"PORT {sock.getsockname()[1]}", flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
