"""Code mypy --strict must reject: each line marked ``# E: <code>`` is an error with that
code, and no other line is (tests/test_typing.py). If the stubs of the compiled modules
decayed to Any, these lines would pass. Type-checked only, never run."""
import fasttcp
from fasttcp.storage import SendRing
from fasttcp.wire import checksum, parse

host = fasttcp.Host("10.0.0.1")
conn = host.connect(("10.0.0.2", 80))
listener = host.listen(80)

n: str = conn.send(b"x")  # E: assignment
data: str = conn.recv()  # E: assignment
conn.send("text")  # E: arg-type
info: dict[str, int] = conn.info()  # E: assignment
state_name: int = conn.info().state  # E: assignment
counters: list[str] = host.stats()  # E: assignment
host.connect("10.0.0.2:80")  # E: arg-type
host.receive(host.transmit("now"), 0.0)  # E: arg-type
deadline: float = host.poll_at()  # E: assignment
listener.accept().recv()  # E: union-attr
port: str = parse(b"").sport  # E: assignment
checksum("text")  # E: arg-type
SendRing("big")  # E: arg-type
conn.no_such_method()  # E: attr-defined
print(host.no_such_attribute)  # E: attr-defined
fasttcp.Host("10.0.0.3", mtu="9000")  # E: arg-type
fasttcp.Host("10.0.0.3", no_such_setting=1)  # E: call-arg

# Correct uses: no errors here.
sent: int = conn.send(b"x") + conn.send(memoryview(b"x")) + conn.send(bytearray(b"x"))
ok_info: fasttcp.ConnectionInfo = conn.info()
rto: float = ok_info.rto
accepted: fasttcp.Connection | None = listener.accept()
host.receive(host.transmit(0.0), 0.0)
counts: dict[str, int] = host.stats()
tuned = fasttcp.Host("10.0.0.4", mtu=9000, initial_rto=1, keepalive=None, congestion="cubic")
