"""The real Eve 2.3.1 serving a domain shaped like opsplane's (services, tasks, exceptions),
with every feature of seed 004 the side-by-side suite compares switched on. No MongoDB server:
Eve's Mongo layer connects through `eve.io.mongo.flask_pymongo.MongoClient`, replaced here by
`mongomock.MongoClient` before the app is built; the rest is Eve's own code.

Usage: python app.py PORT TOKEN
"""

import sys

import mongomock
import eve.io.mongo.flask_pymongo as flask_pymongo

flask_pymongo.MongoClient = mongomock.MongoClient

from eve import Eve  # noqa: E402  (after the client is replaced)
from eve.auth import TokenAuth  # noqa: E402

PORT = int(sys.argv[1])
TOKEN = sys.argv[2]

NAME = {"type": "string", "required": True, "regex": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
DURATION = {"type": "string", "regex": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}

SERVICES = {
    "schema": {
        "metadata": {
            "type": "dict",
            "required": True,
            "schema": {
                "name": NAME,
                "namespace": {"type": "string"},
                "labels": {"type": "dict"},
                "annotations": {"type": "dict"},
            },
        },
        "spec": {
            "type": "dict",
            "required": True,
            "schema": {
                "url": {"type": "string"},
                "checkInterval": DURATION,
                "timeout": DURATION,
                "type": {"type": "string"},
                "environment": {"type": "string"},
                "http": {"type": "dict"},
            },
        },
    },
    "versioning": True,
}

TASKS = {
    "schema": {
        "metadata": {"type": "dict", "required": True, "schema": {"name": NAME}},
        "spec": {
            "type": "dict",
            "required": True,
            "schema": {
                "nodeNames": {"type": "list"},
                "handler": {"type": "string", "allowed": ["OsHandler", "ServiceHandler"]},
                "command": {"type": "string"},
                "data": {"type": "dict"},
            },
        },
    },
}

EXCEPTIONS = {
    "resource_methods": ["GET"],
    "item_methods": ["GET"],
    "schema": {
        "error_type": {"type": "string"},
        "service": {
            "type": "objectid",
            "data_relation": {"resource": "services", "embeddable": True},
        },
    },
}

SETTINGS = {
    "DOMAIN": {"services": SERVICES, "tasks": TASKS, "exceptions": EXCEPTIONS},
    "MONGO_DBNAME": "opsplane",
    "RESOURCE_METHODS": ["GET", "POST", "DELETE"],
    "ITEM_METHODS": ["GET", "PATCH", "PUT", "DELETE"],
    "IF_MATCH": True,
    "ENFORCE_IF_MATCH": True,
    "HATEOAS": True,
    "PAGINATION_DEFAULT": 25,
    "PAGINATION_LIMIT": 50,
    "RENDERERS": ["eve.render.JSONRenderer", "eve.render.XMLRenderer"],
    "JSONP_ARGUMENT": "callback",
    "X_DOMAINS": "*",
    "X_HEADERS": ["Authorization", "Content-Type", "If-Match"],
    "X_EXPOSE_HEADERS": ["ETag"],
    "X_MAX_AGE": 600,
    "CACHE_CONTROL": "max-age=20",
    "CACHE_EXPIRES": 20,
    "SOFT_DELETE": True,
    "OPLOG": True,
    "OPLOG_ENDPOINT": "oplog",
    "OPLOG_AUDIT": True,
    "OPLOG_METHODS": ["DELETE", "POST", "PATCH", "PUT"],
    "SCHEMA_ENDPOINT": "schema",
    "BANDWIDTH_SAVER": True,
    "ALLOW_OVERRIDE_HTTP_METHOD": True,
    "BULK_ENABLED": True,
    "DATE_FORMAT": "%a, %d %b %Y %H:%M:%S GMT",
}


class BearerAuth(TokenAuth):
    def check_auth(self, token, allowed_roles, resource, method):
        return token == TOKEN


app = Eve(settings=SETTINGS, auth=BearerAuth)

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=PORT, threaded=True, use_reloader=False)
