"""The TLS settings every service shares: all three files or none, read at start with errors that
name the file, and a service started with unusable files exits 2 with one line saying which."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmserve.runtime.service_settings import ServiceSettings
from llmserve.runtime.tls import Tls
from llmserve.settings import config_from_env


def test_tls_settings_go_together() -> None:
    assert ServiceSettings().load_tls() is None  # off by default: plaintext
    with pytest.raises(ValueError, match="--tls-key, --tls-ca missing"):
        ServiceSettings(tls_cert="/c.pem")
    with pytest.raises(ValueError, match="--tls-cert missing"):
        config_from_env(ServiceSettings, {"LLMSERVE_TLS_KEY": "/k.pem", "LLMSERVE_TLS_CA": "/ca.pem"})


def test_load_tls_reads_the_pem_files_and_names_a_bad_one(tmp_path: Path) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_bytes(pem)
    (tmp_path / "junk.pem").write_bytes(b"not a certificate")
    files = {"tls_ca": str(tmp_path / "ca.pem"), "tls_cert": str(tmp_path / "cert.pem"),
             "tls_key": str(tmp_path / "key.pem")}
    assert ServiceSettings(**files).load_tls() == Tls(ca=pem, cert=pem, key=pem)
    with pytest.raises(ValueError, match="junk.pem holds no PEM block"):
        ServiceSettings(**{**files, "tls_key": str(tmp_path / "junk.pem")}).load_tls()
    with pytest.raises(FileNotFoundError):
        ServiceSettings(**{**files, "tls_ca": str(tmp_path / "missing.pem")}).load_tls()
    with pytest.raises(ValueError, match="both a certificate and its key"):
        Tls(ca=pem, cert=pem)


def test_a_service_with_unusable_tls_files_exits_2_saying_why(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = subprocess.run(
        [sys.executable, "-m", "kvstore_svc", "--address", "127.0.0.1:0", "--tls-cert", str(missing),
         "--tls-key", str(missing), "--tls-ca", str(missing)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert "kvstore: could not start" in result.stderr and "missing.pem" in result.stderr
