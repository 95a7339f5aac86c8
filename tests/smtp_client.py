"""Send one message over SMTP and print the whole conversation as a JSON list of lines.

    python smtp_client.py PORT HELO_NAME RECIPIENT TOKEN

Connects to 127.0.0.1:PORT (run it inside the test's network namespace), says EHLO HELO_NAME,
and sends a message whose subject and body are TOKEN; DATA is sent only when RCPT is accepted.
Lines are "C: ..." (what we sent) and "S: CODE TEXT" (each line of the server's reply).
Used only by tests.
"""

from __future__ import annotations

import json
import smtplib
import sys


def main(argv: list[str]) -> int:
    port, helo, recipient, token = int(argv[0]), argv[1], argv[2], argv[3]
    lines: list[str] = []

    def said(command: str, reply: tuple[int, bytes]) -> int:
        lines.append(f"C: {command}")
        code, text = reply
        for part in text.decode(errors="replace").splitlines() or [""]:
            lines.append(f"S: {code} {part}")
        return code

    sender = "sender@jailshim.test"
    client = smtplib.SMTP(timeout=20)
    said(f"(connect 127.0.0.1:{port})", client.connect("127.0.0.1", port))
    said(f"EHLO {helo}", client.ehlo(helo))
    said(f"MAIL FROM:<{sender}>", client.mail(sender))
    if said(f"RCPT TO:<{recipient}>", client.rcpt(recipient)) == 250:
        message = f"From: {sender}\r\nTo: {recipient}\r\nSubject: {token}\r\n\r\n{token}\r\n"
        said(f"DATA (Subject: {token}) .", client.data(message))
    said("QUIT", client.quit())
    print(json.dumps(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
