"""The ASGI middleware (ASGI 3): ``app.add_middleware(OpsplaneASGI, ...)`` in FastAPI or
Starlette, or ``OpsplaneASGI(app, ...)`` around any ASGI app. Reports each HTTP request when
the app has finished with it, counting body bytes as they are sent; websocket and lifespan
scopes pass untouched."""

from .event import RequestRecord, call_user, error_of
from .settings import Settings


def _header(scope, name):
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def default_user(scope):
    """Starlette's ``scope["user"]`` (set by its ``AuthenticationMiddleware``) when it is
    authenticated: its ``display_name``, else ``identity``."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return getattr(user, "display_name", None) or getattr(user, "identity", None)


class OpsplaneASGI:
    """Reports every HTTP request of the ASGI ``app`` it wraps.

    Keyword arguments are :class:`~opsplane_integrate.settings.Settings`' (``service``,
    ``reporter`` or ``url``/``token`` and reporter options, ``user``, ``trusted_proxies``,
    ``exclude_methods``, ``before_send``). ``user(scope)`` is called when the response starts
    and returns a name, an ``(id, name)`` pair or None.
    """

    def __init__(self, app, settings=None, **options):
        if settings is not None and options:
            raise TypeError("give either settings= or options, not both")
        options.setdefault("user", default_user)
        self.app = app
        self.settings = settings or Settings(**options)

    @property
    def reporter(self):
        """The :class:`~opsplane_integrate.reporter.Reporter` events go to."""
        return self.settings.reporter

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        client = scope.get("client")
        path = scope.get("path") or "/"
        root = scope.get("root_path") or ""
        if root and not path.startswith(root):
            path = root + path
        record = RequestRecord(
            settings.service,
            (scope.get("method") or "GET").upper(),
            path,
            _header(scope, b"user-agent"),
            settings.proxies.client(
                client[0] if client else None, _header(scope, b"x-forwarded-for")
            ),
        )

        async def counting_send(message):
            kind = message.get("type")
            if kind == "http.response.start":
                record.status = message.get("status")
                record.size = 0
                call_user(settings.user, scope, record)
            elif kind == "http.response.body":
                record.add_size(len(message.get("body") or b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception as e:
            # Unhandled: Starlette's ServerErrorMiddleware (outside this one) or the server
            # answers 500. Report it and let it go on unchanged.
            if record.status is None:
                record.status = 500
                call_user(settings.user, scope, record)
            record.error = error_of(e)
            raise
        finally:
            # Also after a cancellation (the client went away): what was sent is reported.
            settings.emit(record)
