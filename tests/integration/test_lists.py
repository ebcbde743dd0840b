"""Post lists are built from plain rows and pre-built link text (issue 8: app/queries.py,
app/templating.py): they must show exactly what the ORM objects and url_for showed."""

from __future__ import annotations

import re

import pytest
from flask import render_template_string, url_for
from jinja2.filters import do_truncate

from app.extensions import db
from app.models import Post
from app.queries import EXCERPT_CHARS, live_posts, page_of_posts
from app.templating import link


@pytest.mark.parametrize("length", [1, 280, 285, 286, 299, 300, 301, 5000])
def test_a_list_shows_the_same_excerpt_as_the_whole_body_would(app, make_user, length):
    author = make_user("bob")
    # Words and spaces, so truncate() cuts at a word boundary as it would on real text.
    body = ("lorem ipsum " * 1000)[:length]
    with app.test_request_context("/"):
        db.session.add(Post(author=author, title="t", body=body))
        db.session.commit()
        ((row,), _) = page_of_posts(live_posts(), None, 20)
        assert len(row.body) == min(length, EXCERPT_CHARS)
        assert do_truncate(app.jinja_env, row.body, 280) == do_truncate(app.jinja_env, body, 280)


def test_the_api_list_has_whole_bodies(client, make_user, app):
    author = make_user("bob")
    with app.app_context():
        db.session.add(Post(author=author, title="long", body="x" * 20_000))
        db.session.commit()
    (post,) = client.get("/api/v1/posts").get_json()["posts"]
    assert post["body"] == "x" * 20_000
    assert post["author"] == "bob"
    assert post == client.get(f"/api/v1/posts/{post['id']}").get_json()


@pytest.mark.parametrize(
    ("endpoint", "values"),
    [
        ("main.post", {"post_id": 7}),
        ("main.post", {"post_id": 7093146852}),
        ("main.author", {"username": "bob_the-2nd"}),
        # Not URL-unreserved: falls back to url_for, which quotes it.
        ("main.author", {"username": "zoë/../x?y#z"}),
        ("api.get_post", {"post_id": 12}),
    ],
)
@pytest.mark.parametrize("script_root", ["", "/blog"])
def test_link_builds_what_url_for_builds(app, endpoint, values, script_root):
    with app.test_request_context("/", base_url=f"http://localhost{script_root}"):
        assert link(endpoint, **values) == url_for(endpoint, **values)


def test_the_home_page_links_every_post_and_author(client, auth, make_user):
    make_user("bob")
    auth.login("bob")
    for n in range(3):
        auth.post_form("/posts/new", {"title": f"Post {n}", "body": "Text."})
    page = client.get("/").get_data(as_text=True)
    assert re.findall(r'href="(/posts/\d+)"', page) == ["/posts/3", "/posts/2", "/posts/1"]
    assert page.count('href="/u/bob"') >= 3
    with client.application.test_request_context("/"):
        expected = render_template_string(
            "{{ when.isoformat() }} {{ when.strftime('%Y-%m-%d') }}",
            when=db.session.get(Post, 1).created_at,
        )
    iso, day = expected.split()
    assert f'<time datetime="{iso}">{day}</time>' in page
