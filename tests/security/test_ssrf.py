"""SSRF (issue 12, 4): every IPv6 form that carries an IPv4 address is judged by that
address, and the denied ranges are explicit.

The end-to-end test runs the gateway in a network namespace that has only loopback
(``unshare -n``), so a URL that slipped past the guard fails to connect locally
(``image_url_unreachable``) instead of reaching any network, and the test can tell
"refused by the guard" (``url_not_allowed``) from "tried".
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagegate.upstream.fetch import disallowed_address_class

# Teredo: 2001:0:<server v4>:<flags>:<~port>:<~client v4>; the client here is 127.0.0.1.
TEREDO_LOOPBACK_CLIENT = "2001:0:4136:e378:8000:63bf:80ff:fffe"
EMBEDDED_LOOPBACK = {
    "IPv4-mapped": "::ffff:127.0.0.1",
    "IPv4-compatible": "::127.0.0.1",
    "IPv4-translated": "::ffff:0:127.0.0.1",
    "NAT64": "64:ff9b::127.0.0.1",
    "6to4": "2002:7f00:1::1",
    "Teredo": TEREDO_LOOPBACK_CLIENT,
}
EMBEDDED_PRIVATE = {
    "IPv4-compatible": "::10.1.2.3",
    "IPv4-translated": "::ffff:0:192.168.1.1",
    "NAT64": "64:ff9b::a9fe:a9fe",  # 169.254.169.254
    "6to4": "2002:a00:1::1",
}
EXPLICIT_RANGES = [
    "192.0.2.10",
    "198.51.100.1",
    "203.0.113.9",
    "198.18.0.1",
    "192.0.0.8",
    "255.255.255.255",
    "2001:db8::1",
    "100::1",
    "3fff::1",
]


@pytest.mark.parametrize("form", sorted(EMBEDDED_LOOPBACK))
def test_each_ipv4_in_ipv6_form_of_loopback_is_refused(form: str) -> None:
    ip = ipaddress.ip_address(EMBEDDED_LOOPBACK[form])
    assert disallowed_address_class(ip) is not None, form


@pytest.mark.parametrize("form", sorted(EMBEDDED_PRIVATE))
def test_each_ipv4_in_ipv6_form_of_private_addresses_is_refused(form: str) -> None:
    ip = ipaddress.ip_address(EMBEDDED_PRIVATE[form])
    assert disallowed_address_class(ip) in ("private", "link-local", "cloud metadata"), form


@pytest.mark.parametrize("address", EXPLICIT_RANGES)
def test_special_purpose_ranges_are_denied_explicitly(address: str) -> None:
    assert disallowed_address_class(ipaddress.ip_address(address)) is not None


def test_public_addresses_and_their_embeddings_stay_allowed() -> None:
    for address in ("8.8.8.8", "2606:4700::1111", "64:ff9b::8.8.8.8", "2002:808:808::1"):
        assert disallowed_address_class(ipaddress.ip_address(address)) is None, address


_SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1]]
import httpx
from gateway import run_gateway
from fakes.http_server import Reply, serve_http
from e2e_support import png_bytes

forms = json.loads(sys.argv[3])
out = {}
with serve_http({"/a.png": Reply(200, png_bytes(), {"Content-Type": "image/png"})}) as srv:
    with run_gateway(Path(sys.argv[2])) as gw:
        auth = {"Authorization": f"Bearer {gw.admin_key}"}
        for name, host in forms.items():
            url = f"http://[{host}]:{srv.port}/a.png"
            r = httpx.post(f"{gw.v1}/images/edits", headers=auth, timeout=60,
                           json={"model": "sandbox", "prompt": "x", "image": url})
            out[name] = [r.status_code, r.json().get("error", {}).get("code")]
        out["_fake_hits"] = len(srv.requests)
print("RESULT " + json.dumps(out))
"""


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -n")
def test_gateway_in_a_loopback_only_namespace_refuses_every_form(tmp_path: Path) -> None:
    forms = {
        **EMBEDDED_LOOPBACK,
        "control: public NAT64 (allowed, unreachable)": "64:ff9b::8.8.8.8",
    }
    tests_dir = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "probe.py"
    script.write_text(_SCRIPT)
    shell = 'ip link set lo up && exec "$0" "$@"'
    result = subprocess.run(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            shell,
            sys.executable,
            str(script),
            tests_dir,
            str(tmp_path),
            json.dumps(forms),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, result.stdout + result.stderr
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert out.pop("_fake_hits") == 0
    control = out.pop("control: public NAT64 (allowed, unreachable)")
    assert control == [400, "image_url_unreachable"]  # tried: the namespace has no route
    for name, reply in out.items():
        assert reply == [400, "url_not_allowed"], name
