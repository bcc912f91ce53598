"""What routes need of the app: its Celery app, its settings, the errors that mean "store unavailable".

Routes import this, never api.app, so the factory can import the routes at the top of its module.
"""

from __future__ import annotations

from flask import Flask, current_app

from pipeline.settings import Settings
from worker.repobuild_app import RepobuildCelery
from worker.submission import UNAVAILABLE

CELERY_KEY = "repobuild.celery"
SETTINGS_KEY = "repobuild.settings"
# UNAVAILABLE (Redis or the broker cannot be reached): the API answers 503 with a JSON error.
__all__ = ["CELERY_KEY", "SETTINGS_KEY", "UNAVAILABLE", "celery_of", "set_celery", "settings_of"]


def set_celery(app: Flask, celery: RepobuildCelery) -> None:
    app.extensions[CELERY_KEY] = celery


def celery_of(app: Flask | None = None) -> RepobuildCelery:
    return (app or current_app).extensions[CELERY_KEY]  # type: ignore[no-any-return]


def settings_of(app: Flask | None = None) -> Settings:
    return (app or current_app).extensions[SETTINGS_KEY]  # type: ignore[no-any-return]
