"""The WSGI middleware (PEP 3333): wraps any WSGI app — Flask's ``app.wsgi_app``, a plain WSGI
callable — and reports each request when its response body is done (``close()``), so a
streamed body is counted as it passes and its duration covers the whole stream."""

from .event import RequestRecord, call_user, error_of
from .settings import Settings

#: Where a framework hook (Flask's ``got_request_exception``) leaves the exception it handled
#: itself, for the middleware to report with the 500 it turned into.
EXCEPTION_KEY = "opsplane_integrate.exception"


def _path(environ):
    # PEP 3333 carries the path as latin-1 decoded bytes: recover the UTF-8 text.
    raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    try:
        return raw.encode("latin-1").decode("utf-8") or "/"
    except UnicodeError:
        return raw or "/"


def default_user(environ):
    """``REMOTE_USER``, as a WSGI server or an auth middleware in front sets it."""
    return environ.get("REMOTE_USER") or None


class OpsplaneWSGI:
    """Reports every request of the WSGI ``app`` it wraps.

    ``Flask: app.wsgi_app = OpsplaneWSGI(app.wsgi_app, service="shop", url=..., token=...)``.
    Keyword arguments are :class:`~opsplane_integrate.settings.Settings`' (``service``,
    ``reporter`` or ``url``/``token`` and reporter options, ``user``, ``trusted_proxies``,
    ``exclude_methods``, ``before_send``). ``user(environ)`` is called when the response
    starts (in Flask still inside the request context) and returns a name, an
    ``(id, name)`` pair or None.
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

    def __call__(self, environ, start_response):
        settings = self.settings
        record = RequestRecord(
            settings.service,
            environ.get("REQUEST_METHOD", "GET").upper(),
            _path(environ),
            environ.get("HTTP_USER_AGENT"),
            settings.proxies.client(
                environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR")
            ),
        )

        def counting_start_response(status, headers, exc_info=None):
            try:
                record.status = int(str(status).split(" ", 1)[0])
            except ValueError:
                pass
            call_user(settings.user, environ, record)
            write = start_response(status, headers, exc_info)

            def counting_write(data):
                record.add_size(len(data))
                return write(data)

            return counting_write

        try:
            body = self.app(environ, counting_start_response)
        except Exception as e:
            # Unhandled: the server answers 500. Report it and let it go on unchanged.
            if record.status is None:
                record.status = 500
                call_user(settings.user, environ, record)
            record.error = error_of(e)
            settings.emit(record)
            raise
        return _CountedBody(body, record, environ, settings)


class _CountedBody:
    """The app's response iterable, counting bytes as the server reads them; reports at
    ``close()`` (which PEP 3333 servers must call) or when iteration fails."""

    def __init__(self, body, record, environ, settings):
        self._body = body
        self._record = record
        self._environ = environ
        self._settings = settings

    def __iter__(self):
        record = self._record
        try:
            for chunk in self._body:
                record.add_size(len(chunk))
                yield chunk
            if record.size is None:
                record.size = 0
        except GeneratorExit:
            # The server stopped reading (the client went away): report what was sent.
            self._finish()
            raise
        except Exception as e:
            if record.error is None:
                record.error = error_of(e)
            if record.status is None:
                record.status = 500
            self._finish()
            raise

    def close(self):
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()

    def _finish(self):
        record = self._record
        if record.done:
            return
        handled = self._environ.get(EXCEPTION_KEY)
        if handled is not None and record.error is None:
            record.error = error_of(handled)
        self._settings.emit(record)
