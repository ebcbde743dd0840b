"""The JSON API: reading with pagination, writing with a token, JSON errors."""

from __future__ import annotations

import pytest
from conftest import STRONG_PASSWORD


@pytest.fixture
def bob(make_user, api_token):
    make_user("bob")
    return api_token("bob")


def create_posts(client, headers, count):
    for n in range(1, count + 1):
        response = client.post(
            "/api/v1/posts", json={"title": f"Post {n}", "body": f"Body {n}"}, headers=headers
        )
        assert response.status_code == 201


def test_posts_are_listed_newest_first_with_a_link_to_the_next_page(client, bob):
    create_posts(client, bob, 5)
    response = client.get("/api/v1/posts?limit=2")
    assert response.status_code == 200
    assert [post["title"] for post in response.json["posts"]] == ["Post 5", "Post 4"]
    assert (
        response.headers["Link"] == '<http://localhost/api/v1/posts?before=4&limit=2>; rel="next"'
    )

    titles = []
    url = "/api/v1/posts?limit=2"
    while url:
        page = client.get(url)
        titles += [post["title"] for post in page.json["posts"]]
        link = page.headers.get("Link")
        url = link[1 : link.index(">")].removeprefix("http://localhost") if link else None
    assert titles == [f"Post {n}" for n in range(5, 0, -1)]


def test_a_post_and_its_comments_are_readable_by_id(client, bob, make_user, api_token):
    create_posts(client, bob, 1)
    alice = (make_user("alice"), api_token("alice"))[1]
    for n in range(3):
        response = client.post(
            "/api/v1/posts/1/comments", json={"body": f"Comment {n}"}, headers=alice
        )
        assert response.status_code == 201
        assert response.headers["Location"] == f"/api/v1/comments/{n + 1}"

    post = client.get("/api/v1/posts/1").json
    assert post["title"] == "Post 1"
    assert post["author"] == "bob"
    first = client.get("/api/v1/posts/1/comments?limit=2")
    assert [c["body"] for c in first.json["comments"]] == ["Comment 0", "Comment 1"]
    assert "after=2" in first.headers["Link"]
    second = client.get("/api/v1/posts/1/comments?limit=2&after=2")
    assert [c["body"] for c in second.json["comments"]] == ["Comment 2"]
    assert "Link" not in second.headers
    comment = client.get("/api/v1/comments/3").json
    assert comment == {**comment, "post_id": 1, "author": "alice", "body": "Comment 2"}


def test_a_token_is_issued_for_a_username_and_password(client, make_user):
    make_user("alice")
    response = client.post(
        "/api/v1/tokens", json={"username": "alice", "password": STRONG_PASSWORD}
    )
    assert response.status_code == 201
    token = response.json["token"]
    assert (
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json["username"]
        == "alice"
    )

    # A new token revokes the old one.
    client.post("/api/v1/tokens", json={"username": "alice", "password": STRONG_PASSWORD})
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401

    wrong = client.post("/api/v1/tokens", json={"username": "alice", "password": "nope-nope-nope"})
    unknown = client.post("/api/v1/tokens", json={"username": "ghost", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json == {"message": "Unknown username or wrong password."}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer fst_not-a-token"}, {"Authorization": "Basic YTpi"}],
    ids=["no token", "unknown token", "wrong scheme"],
)
def test_writing_requires_a_valid_token(client, headers):
    response = client.post("/api/v1/posts", json={"title": "t", "body": "b"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "API token is required" in response.json["message"]


def test_the_api_needs_no_csrf_token_and_sets_no_cookie(client, bob):
    response = client.post("/api/v1/posts", json={"title": "t", "body": "b"}, headers=bob)
    assert response.status_code == 201
    assert "Set-Cookie" not in response.headers
    assert "Set-Cookie" not in client.get("/api/v1/posts").headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/posts/999", 404),
        ("GET", "/api/v1/comments/999", 404),
        ("GET", "/api/v1/posts/999/comments", 404),
        ("GET", "/api/v1/nothing-here", 404),
        ("DELETE", "/api/v1/posts", 405),
        ("PUT", "/api/v1/posts/1", 405),
    ],
)
def test_every_api_error_is_json_with_a_message(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.is_json
    assert set(response.json) == {"message"}
    assert response.json["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        (
            {"data": "title=t&body=b", "content_type": "application/x-www-form-urlencoded"},
            415,
            "Content-Type: application/json",
        ),
        ({"data": "{not json", "content_type": "application/json"}, 400, "not valid JSON"),
        (
            {"data": b'{"title": "\xff\xfe", "body": "b"}', "content_type": "application/json"},
            400,
            "not valid JSON",
        ),
        ({"json": ["a", "list"]}, 400, "must be a JSON object"),
        ({"json": {"body": "no title"}}, 400, "title must be a string"),
        ({"json": {"title": "   ", "body": "b"}}, 400, "title is required"),
        ({"json": {"title": 42, "body": "b"}}, 400, "title must be a string"),
        ({"json": {"title": "x" * 201, "body": "b"}}, 400, "at most 200 characters"),
        ({"json": {"title": "nul\u0000byte", "body": "b"}}, 400, "invalid characters"),
        (
            {"data": '{"title": "\\ud800", "body": "b"}', "content_type": "application/json"},
            400,
            "invalid characters",
        ),
        ({"data": "x" * (2 * 1024 * 1024), "content_type": "application/json"}, 413, "too large"),
    ],
    ids=[
        "form body",
        "broken json",
        "invalid utf-8",
        "array",
        "missing field",
        "blank",
        "number",
        "too long",
        "nul byte",
        "lone surrogate",
        "oversized body",
    ],
)
def test_bad_api_input_gets_a_4xx_with_a_clear_message(client, bob, kwargs, status, message):
    response = client.post("/api/v1/posts", headers=bob, **kwargs)
    assert response.status_code == status
    assert message in response.json["message"]
    assert client.get("/api/v1/posts").json == {"posts": []}


def test_page_size_and_cursors_are_clamped_not_trusted(client, bob):
    create_posts(client, bob, 3)
    assert len(client.get("/api/v1/posts?limit=100000").json["posts"]) == 3
    assert len(client.get("/api/v1/posts?limit=-5").json["posts"]) == 1
    assert len(client.get("/api/v1/posts?before=abc").json["posts"]) == 3
    assert client.get("/api/v1/posts?before=1").json == {"posts": []}
