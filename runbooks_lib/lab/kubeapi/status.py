"""API errors and the metav1.Status objects the server answers them with."""

from __future__ import annotations

from runbooks_lib.errors import LabError

from .resources import Resource


class ApiError(LabError):
    """An error the API answers with a Status object (``code`` is the HTTP status)."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        super().__init__(f"{code} {reason}: {message}")

    def status(self) -> dict:
        """The metav1.Status document for this error."""
        doc = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if not self.reason:
            del doc["reason"]  # an error that is no API status (kube-apiserver's StatusReasonUnknown)
        if self.details:
            doc["details"] = self.details
        return doc


def qualified(res: Resource) -> str:
    """``pods`` for core resources, ``deployments.apps`` for grouped ones (as in real messages)."""
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _details(res: Resource, name: str) -> dict:
    d = {"name": name, "kind": res.plural}
    if res.group:
        d["group"] = res.group
    return d


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(res)} "{name}" not found', _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(res)} "{name}" already exists', _details(res, name))


def conflict(res: Resource, name: str, why: str = "the object has been modified; please apply your changes to the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(res)} "{name}": {why}', _details(res, name))


def invalid(res: Resource, name: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {message}', {**_details(res, name), "kind": res.kind})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def forbidden(res: Resource, name: str, message: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{qualified(res)} "{name}" is forbidden: {message}', _details(res, name))


def unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def success(res: Resource, name: str, uid: str | None = None) -> dict:
    """The Status a DELETE answers with when the object is already gone."""
    details = _details(res, name)
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
