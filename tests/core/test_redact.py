"""The project's one redaction function."""

from __future__ import annotations

import pytest

from resilience._redact import redact_url


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://u:s3cret@h/db", "s3cret"),
        ("postgresql://u@h/db?password=s3cret", "s3cret"),
        ("postgresql://u@h/db?sslmode=require&sslpassword=s3cret", "s3cret"),
        ("redis://:s3cret@127.0.0.1:6379/0", "s3cret"),
        ("redis://default:s3cret@127.0.0.1:6379/0", "s3cret"),
        ("host=h password=s3cret dbname=db", "s3cret"),
        ("host=h password='s 3cret' dbname=db", "s 3cret"),
    ],
)
def test_redact_url_hides_every_password_form(url: str, secret: str) -> None:
    """No password survives, in the authority, the query or a key=value string."""
    shown = redact_url(url)
    assert secret not in shown
    assert "***" in shown


def test_redact_url_keeps_what_is_not_secret() -> None:
    """Host, port, database and other options are kept as given."""
    assert redact_url("postgresql://u:p@h:5432/db?sslmode=require") == (
        "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert redact_url(None) == ""
