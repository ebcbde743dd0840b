"""Forms (Flask-WTF: every form carries a CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, TextAreaField
from wtforms.validators import EqualTo, Length, Regexp, ValidationError

from app.models import COMMENT_BODY_MAX, POST_BODY_MAX, TITLE_MAX, USERNAME_PATTERN
from app.validation import InvalidTextError, clean_text

PASSWORD_MIN = 10
PASSWORD_MAX = 256
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$"


class ValidText:
    """Reject text Postgres cannot store or that decoded badly, and enforce a length."""

    def __init__(self, max_length: int, required: bool = True) -> None:
        self.max_length = max_length
        self.required = required

    def __call__(self, form: FlaskForm, field) -> None:
        try:
            field.data = clean_text(
                field.data or "", field.label.text, self.max_length, required=self.required
            )
        except InvalidTextError as exc:
            raise ValidationError(str(exc)) from None


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[ValidText(64)])
    password = PasswordField(
        "Password", validators=[Length(max=PASSWORD_MAX), ValidText(PASSWORD_MAX)]
    )


class RegisterForm(FlaskForm):
    username = StringField(
        "Username",
        validators=[
            ValidText(32),
            Regexp(USERNAME_PATTERN, message="Use 3-32 letters, digits, '_' or '-'."),
        ],
    )
    email = StringField(
        "E-mail",
        validators=[
            ValidText(254),
            Regexp(EMAIL_PATTERN, message="Enter an e-mail address like name@example.org."),
        ],
    )
    password = PasswordField(
        "Password",
        validators=[
            ValidText(PASSWORD_MAX),
            Length(min=PASSWORD_MIN, message=f"Use at least {PASSWORD_MIN} characters."),
        ],
    )
    confirm = PasswordField(
        "Repeat password", validators=[EqualTo("password", message="The passwords differ.")]
    )


class PostForm(FlaskForm):
    title = StringField("Title", validators=[ValidText(TITLE_MAX)])
    body = TextAreaField("Text", validators=[ValidText(POST_BODY_MAX)])


class CommentForm(FlaskForm):
    body = TextAreaField("Comment", validators=[ValidText(COMMENT_BODY_MAX)])


class ConfirmForm(FlaskForm):
    """A button-only form (delete, restore, log out, new token): just the CSRF token."""
