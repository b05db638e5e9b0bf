"""The Django middleware: first in ``settings.MIDDLEWARE`` (configured by ``settings.OPSPLANE``),
or put around the whole middleware chain of a ``get_wsgi_application()`` handler by
``integrate(application, ...)``. Reports each request when Django closes its response (after
the WSGI server sent it), so a ``StreamingHttpResponse`` is counted as it passes; the user is
``request.user``; an exception Django turned into a 500 is taken from its
``got_request_exception`` signal."""

import sys

from .event import RequestRecord, call_user, error_of
from .settings import Settings

_ATTR = "_opsplane_exception"


def default_user(request):
    """``request.user``'s name when it is authenticated (``django.contrib.auth``)."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    get_username = getattr(user, "get_username", None)
    return get_username() if get_username else str(user)


def _remember_exception(sender, request=None, **kwargs):
    # Sent from inside Django's `except` block: the exception is the one being handled.
    if request is not None:
        setattr(request, _ATTR, sys.exc_info()[1])


def _connect_signal():
    from django.core.signals import got_request_exception

    got_request_exception.connect(
        _remember_exception, weak=False, dispatch_uid="opsplane_integrate"
    )


def _counted(iterator, record):
    for chunk in iterator:
        record.add_size(len(chunk))
        yield chunk


async def _counted_async(iterator, record):
    async for chunk in iterator:
        record.add_size(len(chunk))
        yield chunk


class OpsplaneMiddleware:
    """Reports every request Django handles.

    As a Django middleware (first in ``MIDDLEWARE``) it is configured from
    ``settings.OPSPLANE``, a dict of :class:`~opsplane_integrate.settings.Settings`' keyword
    arguments (``service``, ``url``, ``token``, ...). ``user(request)`` defaults to
    ``request.user``'s name.
    """

    def __init__(self, get_response, settings=None, **options):
        if settings is None:
            if not options:
                from django.conf import settings as django_settings

                options = dict(getattr(django_settings, "OPSPLANE", {}))
            options.setdefault("user", default_user)
            settings = Settings(**options)
        elif options:
            raise TypeError("give either settings= or options, not both")
        self.get_response = get_response
        self.settings = settings
        _connect_signal()

    @property
    def reporter(self):
        """The :class:`~opsplane_integrate.reporter.Reporter` events go to."""
        return self.settings.reporter

    def __call__(self, request):
        settings = self.settings
        meta = request.META
        record = RequestRecord(
            settings.service,
            (request.method or "GET").upper(),
            request.path,
            meta.get("HTTP_USER_AGENT"),
            settings.proxies.client(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR")),
        )
        try:
            response = self.get_response(request)
        except Exception as e:
            # DEBUG_PROPAGATE_EXCEPTIONS: the server answers 500. Report, re-raise unchanged.
            record.status = 500
            record.error = error_of(e)
            call_user(settings.user, request, record)
            settings.emit(record)
            raise
        try:
            self._measure(request, response, record)
        except Exception:
            settings.emit(record)
        return response

    def _measure(self, request, response, record):
        settings = self.settings
        record.status = response.status_code
        call_user(settings.user, request, record)
        handled = getattr(request, _ATTR, None)
        if handled is not None:
            record.error = error_of(handled)
        if getattr(response, "streaming", False):
            record.size = 0
            if getattr(response, "is_async", False):
                response.streaming_content = _counted_async(response.streaming_content, record)
            else:
                response.streaming_content = _counted(response.streaming_content, record)
        else:
            record.size = len(response.content)
        closers = getattr(response, "_resource_closers", None)
        if isinstance(closers, list):
            # Django's HttpResponse.close() runs these once the server has sent the body.
            closers.append(lambda: settings.emit(record))
        else:
            settings.emit(record)


def is_django_handler(app):
    """Whether ``app`` is Django's ``WSGIHandler`` (what ``get_wsgi_application()`` returns)."""
    if "django" not in sys.modules:
        return False
    try:
        from django.core.handlers.wsgi import WSGIHandler
    except ImportError:
        return False
    return isinstance(app, WSGIHandler)


def install(handler, settings):
    """Puts the middleware around ``handler``'s whole middleware chain, in place."""
    chain = getattr(handler, "_middleware_chain", None)
    if chain is None:
        raise TypeError(
            "this Django handler has no middleware chain loaded: pass get_wsgi_application()'s "
            "result, or list opsplane_integrate.django.OpsplaneMiddleware in MIDDLEWARE"
        )
    middleware = OpsplaneMiddleware(chain, settings)
    handler._middleware_chain = middleware
    return middleware
