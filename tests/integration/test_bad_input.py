"""Hostile or broken requests get a 4xx with a clear message: never a 500, never a trace."""

from __future__ import annotations

import pytest
from conftest import csrf_token_from


@pytest.fixture
def writer(client, auth, make_user):
    make_user("alice")
    auth.login("alice")
    return client


def post_raw_form(client, path: str, body: bytes):
    """Send a urlencoded body byte for byte, as a broken or hostile client might."""
    token = csrf_token_from(client, "/posts/new")
    return client.post(
        path,
        data=b"csrf_token=" + token.encode() + b"&" + body,
        content_type="application/x-www-form-urlencoded",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"title=%FF%FE%FD&body=text", "not valid UTF-8"),
        (b"title=ok&body=%C3%28", "not valid UTF-8"),
        (b"title=\xff\xfe&body=text", "not valid UTF-8"),
        (b"title=nul%00byte&body=text", "invalid characters"),
        (b"title=" + b"x" * 201 + b"&body=text", "at most 200 characters"),
        (b"title=&body=text", "Title is required."),
        (b"body=only", "Title is required."),
        (b"title=t&body=" + b"y" * 20_001, "at most 20000 characters"),
    ],
    ids=[
        "invalid utf-8 title",
        "invalid utf-8 body",
        "raw invalid bytes",
        "nul byte",
        "long title",
        "empty title",
        "missing title",
        "long body",
    ],
)
def test_malformed_form_fields_are_refused_with_the_reason(writer, body, message):
    response = post_raw_form(writer, "/posts/new", body)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert "No posts yet." in writer.get("/").get_data(as_text=True)


def test_an_oversized_form_is_refused_with_413(writer):
    response = post_raw_form(writer, "/posts/new", b"title=t&body=" + b"z" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/api/v1/posts", {"Authorization": "Bearer fst_wrong"}), ("/api/v1/tokens", {})],
    ids=["refused before the body is read", "over MAX_CONTENT_LENGTH"],
)
def test_the_unread_rest_of_a_refused_body_is_read_before_answering(client, path, headers):
    """Else gunicorn closes with data unread, and nginx turns the answer into a 502."""
    size = 1536 * 1024 if "tokens" in path else 64 * 1024
    response = client.post(path, data=b"x" * size, content_type="application/json", headers=headers)
    assert response.status_code in (401, 413)
    assert response.request.environ["wsgi.input"].read() == b""


def multipart(fields: list[tuple[str, bytes]]) -> bytes:
    parts = b"".join(
        b"--b0undary\r\nContent-Disposition: form-data; name=\"" + name.encode() + b"\"\r\n\r\n"
        + value + b"\r\n"
        for name, value in fields
    )  # fmt: skip
    return parts + b"--b0undary--\r\n"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([("title", b"t" * (300 * 1024))], "a field may hold at most 256 KiB"),
        ([(f"f{i}", b"x") for i in range(1_500)], "at most 1000 fields"),
    ],
    ids=["one huge field", "too many fields"],
)
def test_a_multipart_form_over_its_limits_is_refused_naming_the_limit(writer, fields, message):
    """The body is under MAX_CONTENT_LENGTH: the message must not blame the body size."""
    response = writer.post(
        "/posts/new", data=multipart(fields), content_type="multipart/form-data; boundary=b0undary"
    )
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert message in page and "1024 KiB" not in page


@pytest.mark.parametrize("path", ["/api/v1/tokens", "/api/v1/posts"])
def test_deeply_nested_json_is_a_400_not_a_500(client, bob_token, path):
    response = client.post(
        path, data=b"[" * 100_000, content_type="application/json", headers=bob_token
    )
    assert response.status_code == 400
    assert response.json == {"message": "The JSON document is nested too deeply."}


def test_a_recursion_bug_elsewhere_is_still_a_logged_500(app, caplog):
    def recurse(depth: int = 0):
        return recurse(depth + 1)

    app.add_url_rule("/api/v1/recurse", view_func=recurse)
    response = app.test_client().get("/api/v1/recurse")
    assert response.status_code == 500
    assert response.json == {"message": "Something went wrong on our side."}
    assert "RecursionError" in caplog.text


@pytest.fixture
def bob_token(make_user, api_token):
    make_user("bob")
    return api_token("bob")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/posts/999", 404),
        ("GET", "/posts/999/edit", 404),
        ("GET", "/u/nobody", 404),
        ("GET", "/posts/not-a-number", 404),
        ("GET", "/posts/%FF%FE", 404),
        ("GET", "/../../etc/passwd", 404),
        ("GET", "/logout", 405),
        ("PUT", "/posts/new", 405),
        ("DELETE", "/", 405),
        ("GET", "/posts/1/delete", 405),
    ],
)
def test_unknown_ids_and_wrong_methods_get_a_clear_error_page(writer, method, path, status):
    response = writer.open(path, method=method)
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert f"<h1>{status} ·" in page
    assert "Traceback" not in page


def test_nonsense_cursors_are_ignored(client):
    for query in ("?before=abc", "?before=-1", "?before=99999999999999999999", "?before=%00"):
        assert client.get("/" + query).status_code == 200


def test_a_request_id_from_nginx_is_echoed_and_a_bad_one_replaced(client):
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"})
    assert replaced.headers["X-Request-ID"] != "bad id <script>"
    assert len(replaced.headers["X-Request-ID"]) == 16


def test_html_in_user_text_is_escaped(writer):
    post_raw_form(writer, "/posts/new", b"title=%3Cscript%3Ealert(1)%3C%2Fscript%3E&body=b")
    page = writer.get("/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("env", [{"APP_HOST_HEADER": "true"}], indirect=True)
def test_responses_name_the_app_host_when_asked(client):
    import socket

    assert client.get("/healthz").headers["X-Served-By"] == socket.gethostname()


def test_a_bug_gives_a_plain_500_page_and_a_logged_trace_with_the_request_id(app, caplog):
    def broken_view():
        raise RuntimeError("a bug")

    app.add_url_rule("/broken", view_func=broken_view)
    app.add_url_rule("/api/v1/broken", view_func=broken_view, endpoint="api_broken")
    client = app.test_client()

    page = client.get("/broken", headers={"X-Request-ID": "req-500"})
    assert page.status_code == 500
    assert "Something went wrong on our side." in page.get_data(as_text=True)
    assert "a bug" not in page.get_data(as_text=True)
    api = client.get("/api/v1/broken")
    assert api.status_code == 500
    assert api.json == {"message": "Something went wrong on our side."}

    logged = [r for r in caplog.records if r.getMessage().startswith("unhandled error")]
    assert logged[0].request_id == "req-500"
    assert "RuntimeError: a bug" in caplog.text
