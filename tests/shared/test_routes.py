"""routes.match: only whitelisted data-plane operations, rebuilt from validated parts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import GatewayError
from shared.routes import Route, match, upstream_query, valid_deployment_name

DEPLOYMENT_OPS = [
    "chat/completions",
    "completions",
    "embeddings",
    "images/generations",
    "images/edits",
    "audio/transcriptions",
    "audio/translations",
    "audio/speech",
]
V1_OPS = [*DEPLOYMENT_OPS, "responses"]


def status_of(method: str, path: str) -> int:
    with pytest.raises(GatewayError) as info:
        match(method, path)
    return info.value.status


@pytest.mark.parametrize("op", DEPLOYMENT_OPS)
def test_every_operation_on_the_deployments_surface(op: str) -> None:
    route = match("POST", f"/openai/deployments/gpt-4o/{op}")
    assert route == Route(op, "gpt-4o", v1=False)
    assert route.upstream_path("gpt-4o-eu") == f"/openai/deployments/gpt-4o-eu/{op}"


@pytest.mark.parametrize("op", V1_OPS)
def test_every_operation_on_the_v1_surface(op: str) -> None:
    route = match("POST", f"/openai/v1/{op}")
    assert route == Route(op, None, v1=True)
    assert route.upstream_path("ignored-physical") == f"/openai/v1/{op}"


def test_responses_only_exist_on_v1() -> None:
    assert status_of("POST", "/openai/deployments/gpt-4o/responses") == 404


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_response_is_read_or_deleted_by_id(method: str) -> None:
    route = match(method, "/openai/v1/responses/resp_Ab-9")
    assert route == Route("responses", None, v1=True, object_id="resp_Ab-9", method=method)
    assert route.upstream_path("ignored") == "/openai/v1/responses/resp_Ab-9"
    assert match(method, "/openai/v1/responses/" + "a" * 128).object_id == "a" * 128


@pytest.mark.parametrize(
    "path",
    [
        "/openai/v1/responses/",
        "/openai/v1/responses/" + "a" * 129,
        "/openai/v1/responses/resp.1",
        "/openai/v1/responses/resp_1/",
        "/openai/v1/responses/resp_1/input_items",
        "/openai/v1/responses/resp:1",
        "/openai/v1/chat/completions/chatcmpl-1",
        "/openai/v1/files/file-1/",
        "/openai/v1/files/file-1/content/x",
        "/openai/v1/files/file.1",
        "/openai/v1/files/file-1/contents",
        "/openai/responses/resp_1",
        "/openai/models",
    ],
)
def test_object_paths_are_strict(path: str) -> None:
    assert status_of("GET", path) == 404


def test_objects_allow_get_and_delete_only() -> None:
    assert status_of("POST", "/openai/v1/responses/resp_1") == 405
    assert status_of("PUT", "/openai/v1/responses/resp_1") == 405


@pytest.mark.parametrize("prefix", ["/openai/", "/openai/v1/"])
def test_files_on_both_surfaces(prefix: str) -> None:
    v1 = prefix == "/openai/v1/"
    listed = match("GET", prefix + "files")
    assert listed.lists and not listed.creates and listed.upstream_path("ignored") == prefix + "files"
    upload = match("POST", prefix + "files")
    assert upload == Route("files", None, v1=v1, method="POST")
    assert upload.creates and upload.kind == "file" and not upload.by_model
    reads = [
        ("GET", "files/file-1", None),
        ("DELETE", "files/file-1", None),
        ("GET", "files/file-1/content", "content"),
    ]
    for method, path, action in reads:
        route = match(method, prefix + path)
        assert route == Route("files", None, v1=v1, object_id="file-1", method=method, action=action)
        assert route.upstream_path("ignored") == prefix + path and not route.creates
    assert status_of("DELETE", prefix + "files/file-1/content") == 405
    assert status_of("PUT", prefix + "files") == 405


@pytest.mark.parametrize("prefix", ["/openai/", "/openai/v1/"])
def test_batches_on_both_surfaces(prefix: str) -> None:
    v1 = prefix == "/openai/v1/"
    assert match("GET", prefix + "batches").lists
    create = match("POST", prefix + "batches")
    assert create == Route("batches", None, v1=v1) and create.creates and create.kind == "batch"
    read = match("GET", prefix + "batches/batch_1")
    assert read == Route("batches", None, v1=v1, object_id="batch_1", method="GET") and not read.creates
    cancel = match("POST", prefix + "batches/batch_1/cancel")
    assert cancel == Route("batches", None, v1=v1, object_id="batch_1", action="cancel") and not cancel.creates
    assert cancel.upstream_path("ignored") == prefix + "batches/batch_1/cancel"
    assert status_of("DELETE", prefix + "batches/batch_1") == 405
    assert status_of("GET", prefix + "batches/batch_1/cancel") == 405
    assert status_of("POST", prefix + "batches/batch_1/results") == 404


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/openai",
        "/openai/deployments/gpt-4o",
        "/openai/deployments/gpt-4o/",
        "/openai/deployments/gpt-4o/files",
        "/openai/deployments/gpt-4o/chat/completions/",
        "/openai/deployments/gpt-4o/chat/completions/x",
        "/openai/deployments/gpt-4o/chat/completions?api-version=1",
        "/openai/deployments//chat/completions",
        "/openai/deployments/../chat/completions",
        "/openai/deployments/gpt-4o/../../admin/chat/completions",
        "/openai/deployments/.env/chat/completions",
        "/openai/deployments/-x/chat/completions",
        "/openai/deployments/gpt-4o%2f..%2fother/chat/completions",
        "/openai/deployments/gpt%2D4o/chat/completions",
        "/openai/deployments/gpt-4o//chat/completions",
        "//openai/deployments/gpt-4o/chat/completions",
        "/openai/deployments/user@evil.example/chat/completions",
        "/openai/deployments/gpt-4o/chat/completions\r\nHost: evil",
        "/openai/deployments/gpt-4o\n/chat/completions",
        "/openai/deployments/gpt-4o\\chat/completions",
        "/openai/deployments/gpt 4o/chat/completions",
        "/openai/deployments/gpt-4ö/chat/completions",
        "/openai/deployments/" + "a" * 65 + "/chat/completions",
        "/openai/v1/models",
        "/openai/v1/chat/completions/",
        "/openai/v1/../deployments/x/chat/completions",
        "/openai/v1//chat/completions",
        "/OPENAI/v1/chat/completions",
    ],
)
def test_anything_else_is_not_found(path: str) -> None:
    assert status_of("POST", path) == 404


def test_the_longest_name_is_accepted() -> None:
    assert match("POST", "/openai/deployments/" + "a" * 64 + "/embeddings").deployment == "a" * 64


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "post"])
def test_only_post_is_allowed_on_operations(method: str) -> None:
    assert status_of(method, "/openai/deployments/gpt-4o/chat/completions") == 405
    assert status_of(method, "/openai/v1/responses") == 405
    assert status_of(method, "/openai/v1/nothing") == 404  # an unknown path stays a 404


def test_valid_deployment_name() -> None:
    assert valid_deployment_name("gpt-4o")
    assert valid_deployment_name("gpt-4o.mini_2024")
    for bad in ("", ".x", "a/b", "a b", "gpt-4o\n", "a" * 65):
        assert not valid_deployment_name(bad), bad


def test_upstream_path_quotes_the_physical_name() -> None:
    route = match("POST", "/openai/deployments/gpt-4o/chat/completions")
    assert route.upstream_path("my deploy/../x") == "/openai/deployments/my%20deploy%2F..%2Fx/chat/completions"


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ([], ""),
        ([("api-version", "2024-10-21")], "api-version=2024-10-21"),
        ([("api-version", "2024-10-21&evil=1")], "api-version=2024-10-21%26evil%3D1"),
        ([("a", "x y"), ("a", "#frag")], "a=x+y&a=%23frag"),
        ([("a\r\nHost", "v\r\n")], "a%0D%0AHost=v%0D%0A"),
    ],
)
def test_upstream_query_reencodes(params: list[tuple[str, str]], query: str) -> None:
    assert upstream_query(params) == query


_DEPLOYMENT_ALTS = "|".join(map(re.escape, DEPLOYMENT_OPS))
_V1_ALTS = "|".join(map(re.escape, V1_OPS))
_SAFE = re.compile(
    rf"^/openai/deployments/[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}/({_DEPLOYMENT_ALTS})\Z|^/openai/v1/({_V1_ALTS})\Z"
    r"|^/openai/v1/responses/[A-Za-z0-9_-]{1,128}\Z"
    r"|^/openai/(v1/)?files(/[A-Za-z0-9_-]{1,128}(/content)?)?\Z"
)


def _part(valid: list[str], tricks: list[str]) -> st.SearchStrategy[str]:
    """Mostly valid, so that whole paths often match; otherwise a known trick or anything at all."""
    good = st.sampled_from(valid)
    return st.one_of(good, good, good, good, st.sampled_from(tricks), st.text(max_size=5))


_ops = _part(
    V1_OPS,
    [
        "",
        "files",
        "files/file-1",
        "files/file-1/content",
        "models",
        "chat/completions/",
        "chat//completions",
        "chat/../completions",
        "responses/resp_1",
    ],
)
_deployment_paths = st.tuples(
    _part(["/openai/deployments/"], ["/openai/", "/openai/v1/deployments/", "", "//openai/deployments/"]),
    _part(["gpt-4o", "a", "x.y_z-1"], ["", "..", ".", "a@b", "%2e%2e", "a\\b", "a\nb", "a b", "ö"]),
    _part(["/"], ["//", "\\", "/../", "/./", "%2f", "\r\n"]),
    _ops,
).map("".join)
_v1_paths = st.tuples(_part(["/openai/v1/"], ["/openai/v1", "/openai/v1//", "/openai/v1/../"]), _ops).map("".join)


@settings(max_examples=300)
@given(st.sampled_from(["POST", "GET"]), _deployment_paths | _v1_paths)
def test_a_matched_path_is_always_a_safe_upstream_path(method: str, path: str) -> None:
    try:
        route = match(method, path)
    except GatewayError as exc:
        assert exc.status in (404, 405)
        return
    assert route.method == method and (method == "POST" or route.lists) == (route.object_id is None)
    upstream = route.upstream_path(route.deployment or "unused")
    assert _SAFE.match(upstream), upstream
    assert upstream == path  # nothing was rewritten: the client's path was already exactly a safe one
