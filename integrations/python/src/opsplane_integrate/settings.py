"""What every middleware is configured with — the service name, the reporter, the user
callable, trusted proxies, excluded methods and a ``before_send`` hook — and the one place an
event leaves a middleware for the reporter."""

import logging
import os

from .event import DEFAULT_EXCLUDE_METHODS, TrustedProxies
from .reporter import Reporter

log = logging.getLogger("opsplane_integrate")

#: The keyword arguments of :class:`~opsplane_integrate.reporter.Reporter` a middleware or
#: ``integrate()`` passes on when it makes the reporter.
REPORTER_OPTIONS = (
    "queue_size",
    "batch_size",
    "interval",
    "timeout",
    "max_backoff",
    "flush_timeout",
    "service_type",
    "host",
    "ssl_context",
)


def make_reporter(url=None, token=None, **options):
    """A :class:`Reporter` for ``url`` and ``token``, read from ``OPSPLANE_URL`` and
    ``OPSPLANE_TOKEN`` when not given."""
    unknown = set(options) - set(REPORTER_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}")
    url = url or os.environ.get("OPSPLANE_URL")
    token = token or os.environ.get("OPSPLANE_TOKEN")
    return Reporter(url, token, **options)


class Settings:
    """The configuration one middleware reports with."""

    def __init__(
        self,
        *,
        service=None,
        reporter=None,
        url=None,
        token=None,
        user=None,
        trusted_proxies=(),
        exclude_methods=DEFAULT_EXCLUDE_METHODS,
        before_send=None,
        **reporter_options,
    ):
        service = service or os.environ.get("OPSPLANE_SERVICE")
        if not service or not isinstance(service, str):
            raise ValueError(
                "opsplane_integrate requires service: the name requests are reported under "
                "(or set OPSPLANE_SERVICE)"
            )
        if len(service) > 253:
            raise ValueError("service may be at most 253 characters")
        if reporter is not None and (url or token or reporter_options):
            raise TypeError("give either reporter= or url=/token=/reporter options, not both")
        self.service = service
        self.reporter = reporter or make_reporter(url, token, **reporter_options)
        self.user = user
        self.proxies = TrustedProxies(trusted_proxies)
        self.exclude_methods = frozenset(m.upper() for m in exclude_methods or ())
        self.before_send = before_send

    def emit(self, record):
        """Hands the finished request to the reporter, once. Never raises."""
        try:
            if record.done:
                return
            record.done = True
            if record.method in self.exclude_methods and record.error is None:
                return
            event = record.event()
            if self.before_send is not None:
                try:
                    event = self.before_send(event)
                except Exception as e:
                    log.warning("opsplane_integrate: before_send failed: %r", e)
                    return
                if event is None:
                    return
            self.reporter.report(event)
        except Exception as e:
            log.warning("opsplane_integrate: could not report a request: %r", e)
