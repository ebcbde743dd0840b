"""Background jobs (RQ) and the helpers that queue them.

Requests never talk to the mail server: a new comment queues a job in Redis and the worker
(`python -m app.worker`) sends the e-mail over SMTP.
"""

from __future__ import annotations

import logging
import smtplib
from contextlib import contextmanager
from email.message import EmailMessage

from flask import current_app, has_app_context
from rq import Queue, Retry

from app.extensions import db, get_redis
from app.models import Comment

log = logging.getLogger(__name__)

QUEUE_NAME = "flaskstack"


def get_queue(connection=None) -> Queue:
    return Queue(QUEUE_NAME, connection=connection or get_redis())


def queue_comment_notification(comment: Comment) -> None:
    """Queue the e-mail to the post's author; a Redis outage costs the mail, not the comment."""
    if comment.author_id == comment.post.author_id:
        return  # nobody needs mail about their own comment
    try:
        get_queue().enqueue(
            send_comment_notification,
            comment.id,
            retry=Retry(max=3, interval=[10, 60, 300]),
            job_timeout=60,
        )
    except Exception:  # the comment is committed; losing a mail beats failing the request
        log.warning("could not queue notification for comment %s", comment.id, exc_info=True)


@contextmanager
def _app_context():
    """Use the worker's app if it pushed one, else build one (e.g. under a plain `rq worker`)."""
    if has_app_context():
        yield current_app
        return
    from app import create_app

    app = create_app()
    with app.app_context():
        yield app


def send_comment_notification(comment_id: int) -> bool:
    """RQ job: tell a post's author about a new comment. Returns whether a mail was sent."""
    with _app_context() as app:
        comment = db.session.get(Comment, comment_id)
        if comment is None or comment.is_deleted or comment.post.is_deleted:
            log.info("comment %s is gone; no notification", comment_id)
            return False
        post = comment.post
        message = EmailMessage()
        message["From"] = app.config["MAIL_FROM"]
        message["To"] = post.author.email
        message["Subject"] = f"New comment on “{post.title}”"
        message.set_content(
            f"{comment.author.username} commented on your post “{post.title}”:\n\n"
            f"{comment.body}\n\n"
            f"{app.config['SITE_URL']}/posts/{post.id}#comment-{comment.id}\n"
        )
        send_mail(message)
        log.info("sent comment notification %s to %s", comment_id, post.author.username)
        return True


def send_mail(message: EmailMessage) -> None:
    config = current_app.config
    with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=30) as smtp:
        if config["SMTP_STARTTLS"]:
            smtp.starttls()
        if config["SMTP_USERNAME"]:
            smtp.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"])
        smtp.send_message(message)
