"""Security suite (issue 11): sessions and CSRF. The session and CSRF layers are not built
yet, so turning them on must fail loudly (FeatureNotAvailable), never be silently ignored;
the attack cases below are skipped with that reason until the layers land."""

import pytest
from cello import App, SessionConfig
from cello.errors import FeatureNotAvailable


def test_enable_session_is_refused_not_ignored():
    with pytest.raises(FeatureNotAvailable, match="issue 11"):
        App().enable_session(SessionConfig())


def test_enable_csrf_is_refused_not_ignored():
    with pytest.raises(FeatureNotAvailable, match="issue 11"):
        App().enable_csrf()


@pytest.mark.skip(reason="sessions are not built yet (enable_session raises FeatureNotAvailable)")
def test_session_cookie_tampering_yields_empty_session():  # expected: 200 with an empty session
    raise AssertionError


@pytest.mark.skip(reason="sessions are not built yet (enable_session raises FeatureNotAvailable)")
def test_session_replay_after_logout():  # expected: 401 on the replayed cookie
    raise AssertionError


@pytest.mark.skip(reason="CSRF is not built yet (enable_csrf raises FeatureNotAvailable)")
def test_csrf_missing_forged_and_cross_session_tokens():  # expected: 403 problem+json
    raise AssertionError


@pytest.mark.skip(reason="sessions are not built yet: no session cookie to check the flags of")
def test_cookie_flags():  # expected: HttpOnly; Secure; SameSite=Lax
    raise AssertionError
