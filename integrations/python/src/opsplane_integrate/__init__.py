"""Report every request of a Django, Flask or FastAPI app to opsplane (issue 13, seed 000's
``Operations(...).integrate(app, __name__)``): one line,

    from opsplane_integrate import integrate
    integrate(app, service="shop", url="http://opsplane:8080", token=os.environ["OPSPLANE_TOKEN"])

installs the right middleware in place and returns the :class:`Reporter`, whose
:meth:`~Reporter.counters` say what was sent, dropped and refused.
"""

import sys

from .asgi import OpsplaneASGI
from .event import DEFAULT_EXCLUDE_METHODS, TrustedProxies
from .reporter import Counters, Reporter, ingest_url
from .settings import Settings, make_reporter
from .wsgi import EXCEPTION_KEY, OpsplaneWSGI

__all__ = [
    "Counters",
    "DEFAULT_EXCLUDE_METHODS",
    "OpsplaneASGI",
    "OpsplaneWSGI",
    "Reporter",
    "Settings",
    "TrustedProxies",
    "ingest_url",
    "integrate",
    "make_reporter",
]

__version__ = "0.1.0"


def _is(app, module, name):
    if module not in sys.modules:
        return False
    cls = getattr(sys.modules[module], name, None)
    return cls is not None and isinstance(app, cls)


def _flask_exception_hook(sender, exception, **extra):
    from flask import request

    try:
        request.environ[EXCEPTION_KEY] = exception
    except RuntimeError:  # outside a request context
        pass


def integrate(app, *, service=None, url=None, token=None, reporter=None, **options):
    """Installs opsplane's request reporting in ``app``, in place, and returns the
    :class:`Reporter`.

    ``app`` is a Flask app (``app.wsgi_app`` is wrapped in :class:`OpsplaneWSGI` and Flask's
    ``got_request_exception`` reports the exceptions Flask turns into 500s), a FastAPI or
    Starlette app (``app.add_middleware(OpsplaneASGI, ...)``; call it before the app
    starts), or the handler ``django.core.wsgi.get_wsgi_application()`` returns (the
    :class:`~opsplane_integrate.django.OpsplaneMiddleware` goes around its middleware chain).

    ``service`` (or ``OPSPLANE_SERVICE``), ``url`` (opsplane's base URL, or
    ``OPSPLANE_URL``) and ``token`` (a bearer token with the operator role, or
    ``OPSPLANE_TOKEN``) are required, as UtilMeta's ``integrate`` requires ``base_url``: a
    missing or relative one raises ``ValueError`` here, at start, not at the first request.
    Other keyword arguments: ``user``, ``trusted_proxies``, ``exclude_methods``,
    ``before_send`` (see :class:`Settings`) and the :class:`Reporter`'s options
    (``queue_size``, ``batch_size``, ``interval``, ``timeout``, ``max_backoff``,
    ``flush_timeout``, ``service_type``, ``host``, ``ssl_context``); or ``reporter=`` to share
    one reporter between apps.
    """
    from . import django as django_support

    kind = None
    if _is(app, "flask", "Flask"):
        kind = "flask"
    elif _is(app, "starlette.applications", "Starlette"):
        kind = "starlette"
    elif django_support.is_django_handler(app):
        kind = "django"
        options.setdefault("user", django_support.default_user)
    else:
        raise TypeError(
            f"integrate() knows Flask, FastAPI/Starlette and Django's WSGI handler, not "
            f"{type(app).__module__}.{type(app).__qualname__}: wrap another WSGI app in "
            f"OpsplaneWSGI(app, ...) and another ASGI app in OpsplaneASGI(app, ...)"
        )
    if reporter is not None:
        settings = Settings(service=service, reporter=reporter, **options)
    else:
        settings = Settings(service=service, url=url, token=token, **options)
    if kind == "flask":
        from flask import got_request_exception

        if settings.user is None:
            from .wsgi import default_user

            settings.user = default_user
        app.wsgi_app = OpsplaneWSGI(app.wsgi_app, settings)
        got_request_exception.connect(_flask_exception_hook, app, weak=False)
    elif kind == "starlette":
        if settings.user is None:
            from .asgi import default_user

            settings.user = default_user
        app.add_middleware(OpsplaneASGI, settings=settings)
    else:
        django_support.install(app, settings)
    return settings.reporter
