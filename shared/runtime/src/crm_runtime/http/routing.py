"""A route class for command endpoints: the same contract as FastAPI's, without its per-request
dependency solver.

FastAPI answers every request by walking the endpoint's dependency tree: a cache key, a scope
check and four parameter passes for each dependency, then the body, then the endpoint. For a
command endpoint that tree is flat and always the same (the context, the caller from its bearer
token, a header or two, a path id and a JSON body), and walking it costs about as much CPU as
the whole command. :class:`CommandRoute` looks at the tree once, when the route is built; if
every part is one of the simple kinds below, each request then runs a straight-line handler that
does exactly what FastAPI would, in FastAPI's order and with FastAPI's own validators (so the 422
``errors`` are the same, field for field):

1. the body is read and, if JSON, decoded (malformed JSON: 422 ``json_invalid``, before auth);
2. the dependencies run in order, each called with the request (401/403 are raised here);
3. path, query, header and cookie parameters, then the body, are validated; any error: 422;
4. the endpoint runs and its response is returned as it is.

Eligible: ``async def`` dependencies without ``yield`` whose only parameter is the request
(``get_ctx``, the bearer-token user), no duplicate dependency, parameters without
``Response``/``BackgroundTasks``/``SecurityScopes``, a JSON (not form) body, and an endpoint that
returns a :class:`~starlette.responses.Response` (command endpoints return their
``JSONResponse``). Any other route, and any request while ``app.dependency_overrides`` is set,
takes FastAPI's own handler: the class is safe on a whole router. (What the fast handler leaves
out: FastAPI's per-operation OpenTelemetry spans, which only exist once an OpenTelemetry provider
is configured; none is in this platform. Rejected requests still reach FastAPI's telemetry hook.)
"""

from __future__ import annotations

import email.message
import inspect
import json
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic_core import PydanticUndefined as Undefined
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

try:  # FastAPI's and Starlette's own (private) steps, pinned by constraints.txt; another
    # version without them: every route takes FastAPI's handler (CommandRoute is an APIRoute)
    from fastapi._body_limit import get_body_limit_error
    from fastapi._compat import ModelField, field_annotation_is_sequence
    from fastapi.dependencies.utils import (
        _get_form_models,
        _get_param_aliases,
        _get_param_model,
        _is_json_field,
        _should_embed_body_fields,
        _validate_value_with_model_field,
    )
    from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
except ImportError:  # pragma: no cover
    _FAST = False
else:
    _FAST = True

try:  # FastAPI's telemetry hook for a rejected request (a no-op unless OpenTelemetry is set up)
    from fastapi.telemetry import _api as _telemetry
except ImportError:  # pragma: no cover
    _telemetry = None  # type: ignore[assignment]


def _validation_failed(exc: RequestValidationError) -> None:
    if _telemetry is not None:
        _telemetry._validation_failed(exc)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# (field, request key, error location, absent means None: optional, default None, not validated)
_Scalar = tuple["ModelField", str, tuple[str, str], bool]
_Dependency = tuple[str | None, Callable[..., Any], str]  # (value name, call, request kwarg)

__all__ = ["CommandRoute"]


def _is_async_plain(call: Any) -> bool:
    """An ``async def`` (or an object whose ``__call__`` is one), not a generator."""
    if inspect.isclass(call):
        return False
    target = call if inspect.isroutine(call) else getattr(call, "__call__", None)  # noqa: B004
    return target is not None and inspect.iscoroutinefunction(target)


def _dependency(sub: Dependant) -> _Dependency | None:
    """A dependency the fast handler can call as ``await call(request)``; None otherwise."""
    if (
        sub.call is None
        or sub.dependencies
        or sub.path_params
        or sub.query_params
        or sub.header_params
        or sub.cookie_params
        or sub.body_params
        or sub.response_param_name
        or sub.background_tasks_param_name
        or sub.security_scopes_param_name
        or sub.websocket_param_name
        or sub.concurrency is not None
        or not _is_async_plain(sub.call)
    ):
        return None
    names = [n for n in (sub.request_param_name, sub.http_connection_param_name) if n]
    if len(names) != 1:
        return None
    return sub.name, sub.call, names[0]


def _scalar(field: ModelField) -> _Scalar | None:
    """A parameter read with one ``get`` (one name, not a list, not a model): what FastAPI's
    ``request_params_to_args`` does for it, without the per-request classification."""
    if (
        _get_param_model(field) is not None
        or _is_json_field(field)
        or field_annotation_is_sequence(field.field_info.annotation)
    ):
        return None
    aliases = _get_param_aliases(field)
    if len(aliases) != 1:
        return None
    field_info = field.field_info
    assert isinstance(field_info, params.Param)
    key = aliases[0][1]
    absent_is_none = (
        not field_info.is_required() and field.default is None and not field_info.validate_default
    )
    return field, key, (field_info.in_.value, key), absent_is_none


def _returns_response(call: Callable[..., Any]) -> bool:
    try:
        hint = typing.get_type_hints(call).get("return")
    except Exception:
        return False
    return inspect.isclass(hint) and issubclass(hint, Response)


class _Plan:
    """What a request to an eligible route needs, worked out once."""

    def __init__(
        self,
        dependant: Dependant,
        dependencies: list[_Dependency],
        embed_body_fields: bool,
        strict_content_type: bool,
        overrides_provider: Any,
    ) -> None:
        assert dependant.call is not None
        self.call = dependant.call
        self.dependencies = dependencies
        # per source: its parameters read one ``get`` each if all are plain, else FastAPI's way
        self.params: list[tuple[str, list[_Scalar] | None, list[ModelField]]] = []
        for fields, source in (
            (dependant.path_params, "path_params"),
            (dependant.query_params, "query_params"),
            (dependant.header_params, "headers"),
            (dependant.cookie_params, "cookies"),
        ):
            if fields:
                scalars = [_scalar(f) for f in fields]
                plain = [s for s in scalars if s is not None]
                self.params.append((source, plain if len(plain) == len(fields) else None, fields))
        self.body_fields = dependant.body_params
        self.embed_body_fields = embed_body_fields
        # One JSON body model, not embedded: validated whole at ("body",), as FastAPI does.
        self.single_body: ModelField | None = None
        if (
            len(self.body_fields) == 1
            and not embed_body_fields
            and not _should_embed_body_fields(self.body_fields)
            and not _get_form_models(self.body_fields[0])
        ):
            self.single_body = self.body_fields[0]
        self.strict_content_type = strict_content_type
        self.request_names = [
            n for n in (dependant.request_param_name, dependant.http_connection_param_name) if n
        ]
        self.overrides_provider = overrides_provider

    @classmethod
    def of(cls, route: Any) -> _Plan | None:
        dependant: Dependant = route.dependant
        if (
            not _FAST
            or dependant.call is None
            or not _is_async_plain(dependant.call)
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or dependant.security_scopes_param_name
            or dependant.websocket_param_name
            or not _returns_response(dependant.call)
        ):
            return None
        body_field = route.body_field
        if body_field is not None and isinstance(body_field.field_info, params.Form):
            return None
        dependencies = [_dependency(sub) for sub in dependant.dependencies]
        calls = [d[1] for d in dependencies if d is not None]
        if None in dependencies or len({id(c) for c in calls}) != len(calls):
            return None
        strict = route.strict_content_type
        strict = getattr(strict, "value", strict)  # a DefaultPlaceholder holds its value
        return cls(
            dependant,
            [d for d in dependencies if d is not None],
            route._embed_body_fields,
            bool(strict),
            route.dependency_overrides_provider,
        )

    async def body(self, request: Request) -> Any:
        """The request body as FastAPI hands it to validation (decoded JSON, bytes or none)."""
        try:
            raw = await request.body()
            if not raw:
                return Undefined
            content_type = request.headers.get("content-type")
            if content_type == "application/json":
                return json.loads(raw)
            if not content_type:
                return raw if self.strict_content_type else json.loads(raw)
            message = email.message.Message()
            message["content-type"] = content_type
            if message.get_content_maintype() == "application":
                subtype = message.get_content_subtype()
                if subtype == "json" or subtype.endswith("+json"):
                    return json.loads(raw)
            return raw
        except json.JSONDecodeError as e:
            invalid = RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body", e.pos),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": e.msg},
                    }
                ],
                body=e.doc,
            )
            _validation_failed(invalid)
            raise invalid from e
        except HTTPException:
            raise
        except Exception as e:
            if MAX_BODY_SIZE_SCOPE_KEY in request.scope and (error := get_body_limit_error(e)):
                raise error from e
            raise HTTPException(
                status_code=400, detail="There was an error parsing the body"
            ) from e

    def handler(self, standard: Handler) -> Handler:
        plan = self

        async def app(request: Request) -> Response:
            provider = plan.overrides_provider
            if provider is not None and getattr(provider, "dependency_overrides", None):
                return await standard(request)  # overridden dependencies: FastAPI resolves them
            body = await plan.body(request) if plan.body_fields else Undefined
            values: dict[str, Any] = {}
            for name, call, request_kwarg in plan.dependencies:
                value = await call(**{request_kwarg: request})
                if name is not None:
                    values[name] = value
            errors: list[Any] = []
            for source, scalars, fields in plan.params:
                received = getattr(request, source)
                if scalars is None:
                    found, wrong = request_params_to_args(fields, received)
                    values.update(found)
                    errors += wrong
                    continue
                for field, key, loc, absent_is_none in scalars:
                    raw = received.get(key)
                    if raw is None and absent_is_none:
                        values[field.name] = None
                        continue
                    value, wrong = _validate_value_with_model_field(
                        field=field, value=Undefined if raw is None else raw, values={}, loc=loc
                    )
                    if wrong:
                        errors += wrong
                    else:
                        values[field.name] = value
            if plan.single_body is not None:
                value, wrong = _validate_value_with_model_field(
                    field=plan.single_body, value=body, values={}, loc=("body",)
                )
                values[plan.single_body.name] = value
                errors += wrong
            elif plan.body_fields:
                found, wrong = await request_body_to_args(
                    body_fields=plan.body_fields,
                    received_body=body,
                    embed_body_fields=plan.embed_body_fields,
                )
                values.update(found)
                errors += wrong
            if errors:
                invalid = RequestValidationError(errors, body=None if body is Undefined else body)
                _validation_failed(invalid)
                raise invalid
            for name in plan.request_names:
                values[name] = request
            response = await plan.call(**values)
            if not isinstance(response, Response):
                raise TypeError(
                    f"{plan.call.__qualname__} is annotated to return a Response"
                    f" but returned {type(response).__name__}"
                )
            return response

        return app


class CommandRoute(APIRoute):
    """An APIRoute whose eligible endpoints skip FastAPI's dependency solver (see the module)."""

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        plan = _Plan.of(_effective(self))
        self.fast = plan is not None  # for tests: which routes take the fast handler
        return plan.handler(standard) if plan is not None else standard


def _effective(route: APIRoute) -> Any:
    """The route as included (router-level dependencies, overrides provider, content type)."""
    var = getattr(fastapi_routing, "_effective_route_context_var", None)
    context = var.get() if var is not None else None
    if context is not None and getattr(context, "original_route", None) is route:
        return context
    return route
