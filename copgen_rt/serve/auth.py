"""Bearer tokens: none (loopback only), one shared --token, or per-client tokens (--tokens FILE:
one `NAME TOKEN` per line), where a client sees and dismisses only its own jobs."""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from copgen_rt.files import is_regular_file

MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Tokens:
    by_name: dict[str, str]  # client name -> token; empty: no authentication
    per_client: bool  # from --tokens: jobs are kept apart by client

    @classmethod
    def of(cls, token: str | None, tokens_file: str | None) -> Tokens:
        if token and tokens_file:
            raise ValueError("give --token or --tokens, not both")
        if token:
            _check_token("--token", token)
            return cls({"client": token}, per_client=False)
        if tokens_file:
            return cls(read_tokens(Path(tokens_file)), per_client=True)
        return cls({}, per_client=False)

    @property
    def required(self) -> bool:
        return bool(self.by_name)

    def client(self, authorization: str | None) -> str | None:
        """The client a request's `Authorization: Bearer TOKEN` names; None if it names none.
        Every token is compared in constant time."""
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return None
        found = None
        for name, token in self.by_name.items():
            if hmac.compare_digest(given.strip().encode(), token.encode()):
                found = name
        return found

    def owner(self, client: str) -> str:
        """Whose jobs a client sees: its own with per-client tokens, else everyone's ("")."""
        return client if self.per_client else ""


def read_tokens(path: Path) -> dict[str, str]:
    if not is_regular_file(path):
        raise ValueError(f"--tokens {path}: not a plain file")
    tokens: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"--tokens {path}, line {number}: expected NAME TOKEN")
        name, token = parts
        _check_token(f"--tokens {path}, line {number}", token)
        if name in tokens or token in tokens.values():
            raise ValueError(f"--tokens {path}, line {number}: {name} or its token is given twice")
        tokens[name] = token
    if not tokens:
        raise ValueError(f"--tokens {path}: no NAME TOKEN line")
    return tokens


def _check_token(where: str, token: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"{where}: a token needs at least {MIN_TOKEN_CHARS} characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
        )


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is only reachable from this machine."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        raise ValueError(f"--host {host}: not an address of this machine") from None
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)
