"""The Django app of apps.py: its URLs and views, and django.contrib.auth's RemoteUserMiddleware
reading the user from the X-User header (Django's documented way to take a user from a proxy),
so `request.user` is a real authenticated User."""

import time

from django.contrib.auth.middleware import RemoteUserMiddleware
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path


class HeaderRemoteUserMiddleware(RemoteUserMiddleware):
    header = "HTTP_X_USER"


def hello(request):
    return HttpResponse("hello from django")


def boom(request):
    raise ValueError("django boom")


def stream(request):
    def chunks():
        for _ in range(10):
            time.sleep(0.03)
            yield b"d" * 100

    return StreamingHttpResponse(chunks(), content_type="text/plain")


urlpatterns = [
    path("hello", hello),
    path("boom", boom),
    path("stream", stream),
]
