"""Microcontrollers on a serial line as fleet devices (``fleetbench bridge``).

framing   COBS frames with a CRC-32 (PROTOCOL.md is the firmware author's reference)
codec     the board protocol's packets: HELLO, PING, HEALTH, BENCH, RESULT...
board     the link to one board: requests, retries, stalls, resets, unplugging
bridge    the device daemon (``agent.device``) for one board on one port
jobs      what a job may ask of a board;  records  a board's runs as result records
config    the bridge's settings;  ports  serial ports and USB ids;  emulator  a board on a pty
"""
