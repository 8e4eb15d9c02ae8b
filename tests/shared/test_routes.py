"""routes.match: only whitelisted data-plane operations, rebuilt from validated parts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import GatewayError
from shared.routes import match, upstream_query, valid_deployment_name

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
    assert (route.operation, route.deployment, route.v1, route.metered, route.by_model) == (
        op,
        "gpt-4o",
        False,
        True,
        False,
    )
    assert route.upstream_path("gpt-4o-eu") == f"/openai/deployments/gpt-4o-eu/{op}"


@pytest.mark.parametrize("op", V1_OPS)
def test_every_operation_on_the_v1_surface(op: str) -> None:
    route = match("POST", f"/openai/v1/{op}")
    assert (route.operation, route.deployment, route.v1, route.metered, route.by_model) == (op, None, True, True, True)
    assert route.upstream_path("ignored-physical") == f"/openai/v1/{op}"


def test_responses_on_the_azure_style_surface_too_but_not_under_a_deployment() -> None:
    route = match("POST", "/openai/responses")
    assert (route.v1, route.by_model, route.metered, route.creates, route.kind) == (False, True, True, True, "response")
    assert route.upstream_path("x") == "/openai/responses"
    assert status_of("POST", "/openai/deployments/gpt-4o/responses") == 404
    assert status_of("POST", "/openai/chat/completions") == 404  # other operations need a deployment there


@pytest.mark.parametrize("prefix", ["/openai/", "/openai/v1/"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_response_is_read_or_deleted_by_id(prefix: str, method: str) -> None:
    route = match(method, f"{prefix}responses/resp_Ab-9")
    assert (route.kind, route.object_id, route.root, route.method) == (
        "response",
        "resp_Ab-9",
        ("response", "resp_Ab-9"),
        method,
    )
    assert route.upstream_path("ignored") == f"{prefix}responses/resp_Ab-9"
    assert not route.metered and not route.creates and route.deletes == (method == "DELETE")
    assert match(method, f"{prefix}responses/" + "a" * 128).object_id == "a" * 128
    items = match("GET", f"{prefix}responses/resp_1/input_items")
    assert (items.action, items.root, items.lists) == ("input_items", ("response", "resp_1"), False)
    assert match("POST", f"{prefix}responses/resp_1/cancel").action == "cancel"


@pytest.mark.parametrize(
    "path",
    [
        "/openai/v1/responses/",
        "/openai/v1/responses/" + "a" * 129,
        "/openai/v1/responses/resp.1",
        "/openai/v1/responses/resp_1/",
        "/openai/v1/responses/resp_1/input_items/x",
        "/openai/v1/responses/resp:1",
        "/openai/v1/chat/completions/chatcmpl-1",
        "/openai/v1/files/file-1/",
        "/openai/v1/files/file-1/content/x",
        "/openai/v1/files/file.1",
        "/openai/v1/files/file-1/contents",
        "/openai/models",
        "/openai/assistants/asst_1/x",
        "/openai/threads/thread_1/runs/run_1/steps/step_1/x",
    ],
)
def test_object_paths_are_strict(path: str) -> None:
    assert status_of("GET", path) == 404


def test_objects_allow_their_methods_only() -> None:
    assert status_of("POST", "/openai/v1/responses/resp_1") == 405
    assert status_of("PUT", "/openai/v1/responses/resp_1") == 405
    assert status_of("GET", "/openai/v1/responses") == 405  # no list of responses
    assert status_of("GET", "/openai/threads") == 405  # nor of threads


@pytest.mark.parametrize("prefix", ["/openai/", "/openai/v1/"])
def test_files_on_both_surfaces(prefix: str) -> None:
    listed = match("GET", prefix + "files")
    assert listed.lists and not listed.creates and listed.upstream_path("ignored") == prefix + "files"
    upload = match("POST", prefix + "files")
    assert upload.creates and upload.kind == "file" and not upload.by_model and not upload.metered
    for method, path, action in [
        ("GET", "files/file-1", None),
        ("DELETE", "files/file-1", None),
        ("GET", "files/file-1/content", "content"),
    ]:
        route = match(method, prefix + path)
        assert (route.kind, route.object_id, route.action, route.root) == ("file", "file-1", action, ("file", "file-1"))
        assert route.upstream_path("ignored") == prefix + path and not route.creates
    assert status_of("DELETE", prefix + "files/file-1/content") == 405
    assert status_of("PUT", prefix + "files") == 405


@pytest.mark.parametrize("prefix", ["/openai/", "/openai/v1/"])
def test_batches_on_both_surfaces(prefix: str) -> None:
    assert match("GET", prefix + "batches").lists
    create = match("POST", prefix + "batches")
    assert create.creates and create.kind == "batch" and create.root is None
    read = match("GET", prefix + "batches/batch_1")
    assert read.root == ("batch", "batch_1") and not read.creates
    cancel = match("POST", prefix + "batches/batch_1/cancel")
    assert cancel.action == "cancel" and not cancel.creates
    assert cancel.upstream_path("ignored") == prefix + "batches/batch_1/cancel"
    assert status_of("DELETE", prefix + "batches/batch_1") == 405
    assert status_of("GET", prefix + "batches/batch_1/cancel") == 405
    assert status_of("POST", prefix + "batches/batch_1/results") == 404


# (method, path, surfaces) of every stateful route, with the root that names its home.
STATEFUL = [
    ("POST", "conversations", {"v1"}, None),
    ("GET", "conversations/conv_1", {"v1"}, ("conversation", "conv_1")),
    ("POST", "conversations/conv_1", {"v1"}, ("conversation", "conv_1")),
    ("POST", "conversations/conv_1/items", {"v1"}, ("conversation", "conv_1")),
    ("GET", "conversations/conv_1/items/msg_1", {"v1"}, ("conversation", "conv_1")),
    ("DELETE", "conversations/conv_1/items/msg_1", {"v1"}, ("conversation", "conv_1")),
    ("POST", "vector_stores", {"classic", "v1"}, None),
    ("GET", "vector_stores", {"classic", "v1"}, None),
    ("POST", "vector_stores/vs_1/search", {"classic", "v1"}, ("vector_store", "vs_1")),
    ("POST", "vector_stores/vs_1/files", {"classic", "v1"}, ("vector_store", "vs_1")),
    ("GET", "vector_stores/vs_1/files/file-1/content", {"classic", "v1"}, ("vector_store", "vs_1")),
    ("POST", "vector_stores/vs_1/file_batches", {"classic", "v1"}, ("vector_store", "vs_1")),
    ("POST", "vector_stores/vs_1/file_batches/vsfb_1/cancel", {"classic", "v1"}, ("vector_store", "vs_1")),
    ("GET", "vector_stores/vs_1/file_batches/vsfb_1/files", {"classic", "v1"}, ("vector_store", "vs_1")),
    ("POST", "assistants", {"classic"}, None),
    ("POST", "assistants/asst_1", {"classic"}, ("assistant", "asst_1")),
    ("POST", "threads", {"classic"}, None),
    ("POST", "threads/runs", {"classic"}, None),
    ("GET", "threads/thread_1/messages", {"classic"}, ("thread", "thread_1")),
    ("POST", "threads/thread_1/runs", {"classic"}, ("thread", "thread_1")),
    ("POST", "threads/thread_1/runs/run_1/submit_tool_outputs", {"classic"}, ("thread", "thread_1")),
    ("GET", "threads/thread_1/runs/run_1/steps/step_1", {"classic"}, ("thread", "thread_1")),
    ("POST", "containers", {"v1"}, None),
    ("POST", "containers/cntr_1/files", {"v1"}, ("container", "cntr_1")),
    ("GET", "containers/cntr_1/files/cfile_1/content", {"v1"}, ("container", "cntr_1")),
]


@pytest.mark.parametrize(("method", "path", "surfaces", "root"), STATEFUL)
def test_every_stateful_kind_on_the_surfaces_azure_offers_it(
    method: str, path: str, surfaces: set[str], root: tuple[str, str] | None
) -> None:
    for surface, prefix in (("classic", "/openai/"), ("v1", "/openai/v1/")):
        if surface not in surfaces:
            assert status_of(method, prefix + path) == 404
            continue
        route = match(method, prefix + path)
        assert route.root == root and not route.metered and route.method == method
        assert route.upstream_path("unused") == prefix + path
        assert route.lists == (method == "GET" and "/" not in path)


def test_nested_creates_are_creates_and_nested_lists_go_home() -> None:
    message = match("POST", "/openai/threads/thread_1/messages")
    assert message.creates and message.kind == "thread.message" and message.root == ("thread", "thread_1")
    listed = match("GET", "/openai/threads/thread_1/runs")
    assert not listed.lists and listed.root == ("thread", "thread_1")
    assert not match("POST", "/openai/threads/thread_1/runs/run_1/cancel").creates
    assert match("DELETE", "/openai/assistants/asst_1").deletes
    assert not match("DELETE", "/openai/v1/conversations/conv_1/items/msg_1").deletes  # a nested object


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
        "/openai/v1/assistants",  # assistants only on the classic surface
        "/openai/conversations",  # conversations only on v1
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
    assert upstream_query(params) == query  # the second time from the cache of short queries


def test_long_queries_drop_credentials_as_short_ones_do() -> None:
    params = [("api-version", "2024-10-21"), ("api-key", "secret"), *[(f"p{i}", str(i)) for i in range(6)]]
    assert upstream_query(params) == "api-version=2024-10-21&" + "&".join(f"p{i}={i}" for i in range(6))
    assert upstream_query(params[:3]) == "api-version=2024-10-21&p0=0"


_DEPLOYMENT_ALTS = "|".join(map(re.escape, DEPLOYMENT_OPS))
_V1_ALTS = "|".join(map(re.escape, V1_OPS))
_SAFE = re.compile(
    rf"^/openai/deployments/[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}/({_DEPLOYMENT_ALTS})\Z|^/openai/v1/({_V1_ALTS})\Z"
    r"|^/openai/(v1/)?responses(/[A-Za-z0-9_-]{1,128})?\Z"
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
    assert route.root is None or route.upstream_path("x").endswith(route.root[1]) or route.action is not None
    upstream = route.upstream_path(route.deployment or "unused")
    assert _SAFE.match(upstream), upstream
    assert upstream == path  # nothing was rewritten: the client's path was already exactly a safe one
