"""Pages through the test client: reading, writing, editing, deleting, restoring."""

from __future__ import annotations

import pytest


def test_anonymous_visitor_reads_posts_without_getting_a_cookie(client, auth, make_user):
    make_user("bob")
    auth.login("bob")
    auth.post_form("/posts/new", {"title": "Hello world", "body": "First post."})
    auth.logout()
    client.delete_cookie("session")

    for path in ("/", "/posts/1", "/u/bob", "/healthz"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Set-Cookie" not in response.headers, path
    page = client.get("/").get_data(as_text=True)
    assert "Hello world" in page
    assert "Log in" in page
    assert "Log in</a> to comment" in client.get("/posts/1").get_data(as_text=True)


def test_answers_built_from_a_session_or_credentials_are_private(app, client, auth, make_user):
    """nginx's microcache stores what is not private: only anonymous answers may be."""
    make_user("carol")
    assert "private" not in client.get("/").headers.get("Cache-Control", "")
    # Sent to the login page with a flash message, kept in a new session.
    flashed = client.get("/posts/new")
    assert flashed.status_code == 302 and "private" in flashed.headers["Cache-Control"]
    auth.login("carol")
    assert "private" in client.get("/").headers["Cache-Control"]
    with_credentials = app.test_client().get("/", headers={"Authorization": "Bearer unknown"})
    assert "private" in with_credentials.headers["Cache-Control"]


def test_health_probes_are_never_stored_by_a_cache(client):
    for path in ("/healthz", "/readyz"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path


def test_a_new_user_registers_writes_and_edits_a_post(client, auth):
    response = auth.register("alice", follow=True)
    assert response.status_code == 200
    assert "Welcome, alice!" in response.get_data(as_text=True)

    response = auth.post_form("/posts/new", {"title": "My first post", "body": "Hi.\n\nBye."})
    assert response.status_code == 302
    post_url = response.headers["Location"]
    page = client.get(post_url).get_data(as_text=True)
    assert "My first post" in page
    assert "<p>Bye.</p>" in page

    response = auth.post_form(
        f"{post_url}/edit", {"title": "My edited post", "body": "Changed."}, follow=True
    )
    assert "Your changes are saved." in response.get_data(as_text=True)
    assert "My edited post" in client.get("/u/alice").get_data(as_text=True)
    assert "(edited)" in client.get(post_url).get_data(as_text=True)


def test_registration_rejects_taken_names_and_weak_passwords(client, auth, make_user):
    make_user("alice")
    response = auth.register("alice")
    assert response.status_code == 400
    assert "already registered" in response.get_data(as_text=True)

    response = auth.register("carol", password="short")
    assert response.status_code == 400
    assert "at least 10 characters" in response.get_data(as_text=True)


def test_login_says_the_same_for_unknown_user_and_wrong_password(auth, make_user):
    make_user("alice")
    unknown = auth.login("nobody-here", "whatever-password")
    wrong = auth.login("alice", "wrong-password-123")
    assert unknown.status_code == wrong.status_code == 400
    for response in (unknown, wrong):
        assert "Unknown username or wrong password." in response.get_data(as_text=True)
    assert auth.login("alice").status_code == 302


def test_signed_in_users_comment_and_authors_are_notified(client, auth, make_user, app):
    from app.tasks import get_queue

    make_user("bob")
    auth.login("bob")
    auth.post_form("/posts/new", {"title": "Bob's post", "body": "Text."})
    auth.logout()

    auth.register("alice")
    response = auth.post_form("/posts/1/comments", {"body": "Nice post!"}, form_page="/posts/1")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/posts/1#comment-1")
    assert "Nice post!" in client.get("/posts/1").get_data(as_text=True)
    with app.app_context():
        assert get_queue().count == 1


def test_empty_comment_is_refused_with_the_form_shown_again(client, auth, make_user):
    make_user("bob")
    auth.login("bob")
    auth.post_form("/posts/new", {"title": "Post", "body": "Text."})
    response = auth.post_form("/posts/1/comments", {"body": "   "}, form_page="/posts/1")
    assert response.status_code == 400
    assert "Comment is required." in response.get_data(as_text=True)


def test_only_the_author_may_edit_or_delete_a_post(client, auth, make_user):
    make_user("bob")
    auth.login("bob")
    auth.post_form("/posts/new", {"title": "Bob's post", "body": "Text."})
    auth.logout()

    auth.register("mallory")
    assert client.get("/posts/1/edit").status_code == 403
    response = auth.post_form("/posts/1/delete", {}, form_page="/posts/1")
    assert response.status_code == 403
    assert "Only the author" in response.get_data(as_text=True)
    assert client.get("/posts/1").status_code == 200


def test_writing_requires_logging_in(client):
    response = client.get("/posts/new")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_deleted_posts_and_comments_are_hidden_and_an_admin_restores_them(client, auth, make_user):
    make_user("bob")
    make_user("root", admin=True)
    auth.login("bob")
    auth.post_form("/posts/new", {"title": "Soon gone", "body": "Text."})
    auth.post_form("/posts/1/comments", {"body": "Gone too"}, form_page="/posts/1")
    auth.post_form("/comments/1/delete", {}, form_page="/posts/1")
    response = auth.post_form("/posts/1/delete", {}, form_page="/posts/1", follow=True)
    assert "The post is deleted." in response.get_data(as_text=True)
    assert client.get("/posts/1").status_code == 404
    assert "Soon gone" not in client.get("/").get_data(as_text=True)
    assert client.get("/admin/deleted").status_code == 403
    auth.logout()

    auth.login("root")
    page = client.get("/admin/deleted").get_data(as_text=True)
    assert "Soon gone" in page
    assert "Gone too" in page
    assert "This post is deleted" in client.get("/posts/1").get_data(as_text=True)
    auth.post_form("/admin/posts/1/restore", {}, form_page="/admin/deleted")
    auth.post_form("/admin/comments/1/restore", {}, form_page="/admin/deleted")
    auth.logout()

    page = client.get("/posts/1").get_data(as_text=True)
    assert "Soon gone" in page
    assert "Gone too" in page


def test_only_the_commenter_may_delete_a_comment(client, auth, make_user):
    make_user("bob")
    auth.login("bob")
    auth.post_form("/posts/new", {"title": "Post", "body": "Text."})
    auth.post_form("/posts/1/comments", {"body": "A comment by Bob"}, form_page="/posts/1")
    auth.logout()
    auth.register("mallory")
    response = auth.post_form("/comments/1/delete", {}, form_page="/posts/1")
    assert response.status_code == 403
    assert "A comment by Bob" in client.get("/posts/1").get_data(as_text=True)


@pytest.mark.parametrize("env", [{"PAGE_SIZE": "2"}], indirect=True)
def test_pages_link_to_older_posts(client, auth, make_user):
    make_user("bob")
    auth.login("bob")
    for n in range(1, 6):
        auth.post_form("/posts/new", {"title": f"Post number {n}", "body": "Text."})
    first = client.get("/").get_data(as_text=True)
    assert "Post number 5" in first
    assert "Post number 3" not in first
    assert 'href="/?before=4"' in first
    second = client.get("/?before=4").get_data(as_text=True)
    assert "Post number 3" in second
    assert "Post number 2" in second
    last = client.get("/u/bob?before=2").get_data(as_text=True)
    assert "Post number 1" in last
    assert "Older posts" not in last


def test_api_token_page_shows_a_new_token_once(client, auth):
    auth.register("alice")
    assert "Create a new token" in client.get("/settings/token").get_data(as_text=True)
    response = auth.post_form("/settings/token", {})
    page = response.get_data(as_text=True)
    assert "shown only once" in page
    token = page.split('<pre class="token">')[1].split("</pre>")[0]
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json == {
        "username": "alice",
        "created_at": client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json[
            "created_at"
        ],
    }
