"""GUI test helpers that act as a user: a model in the hub cache, clicks, keys, and no alerts.

* ``hub_cache``: a Hugging Face cache folder (``HF_HOME``) holding a tiny random network under
  the name of the real ``facebook/sam2.1-hiera-tiny``, so pressing "Load model" with the default
  size finds it offline, as it would find a downloaded model.
* ``no_alerts``: the test fails if napari shows a notification of warning level or higher, or a
  warning a user would see is raised, while the test's workflow runs.

The user's actions themselves (clicks, keys, buttons) are in ``_user_actions.py``.
"""

from __future__ import annotations

import warnings

import pytest

HUB_REPO = "facebook/sam2.1-hiera-tiny"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="session")
def hub_cache_dir(tmp_path_factory):
    from napari_sam2.testing import save_tiny_model

    home = tmp_path_factory.mktemp("hf-home")
    repo = home / "hub" / ("models--" + HUB_REPO.replace("/", "--"))
    save_tiny_model(repo / "snapshots" / SNAPSHOT, image_size=256, seed=0)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return home


@pytest.fixture
def hub_cache(hub_cache_dir, monkeypatch):
    """HF_HOME points at a cache holding "sam2.1-tiny" (downloads stay switched off)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(hub_cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache_dir / "hub"))
    return hub_cache_dir


class Alerts:
    """Notifications and user-visible warnings seen while a test runs."""

    def __init__(self):
        self.seen: list[str] = []

    def check(self):
        assert not self.seen, "the user was shown:\n" + "\n".join(self.seen)


@pytest.fixture
def no_alerts(make_napari_viewer):
    """Fail the test on any napari notification of warning level or higher, or user warning."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    alerts = Alerts()
    levels = {NotificationSeverity.WARNING, NotificationSeverity.ERROR}

    def seen(notification):
        if notification.severity in levels:
            alerts.seen.append(f"{notification.severity}: {notification.message}")

    notification_manager.notification_ready.connect(seen)
    with warnings.catch_warnings(record=True) as caught:
        # what Python shows a user by default (napari turns these into toasts)
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", cat)
        yield alerts
    notification_manager.notification_ready.disconnect(seen)
    for w in caught:
        alerts.seen.append(f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})")
    alerts.check()
