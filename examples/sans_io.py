"""The README's sans-IO example: two hosts, the caller moves the packets.
Run: python examples/sans_io.py"""
from fasttcp import Host

client, server = Host("10.0.0.1"), Host("10.0.0.2")
listener = server.listen(80)
conn = client.connect(("10.0.0.2", 80))
conn.send(b"hello")
for _ in range(10):                      # the "network": hand packets across
    server.receive(client.transmit(0.0), 0.0)
    client.receive(server.transmit(0.0), 0.0)
peer = listener.accept()                 # None while no connection is waiting
assert peer is not None
print(peer.recv(), conn.info().state)    # b'hello' ESTABLISHED
