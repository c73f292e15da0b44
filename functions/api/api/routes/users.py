"""The caller's profile and notification preferences. Any valid token; admins may manage anyone's."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path
from jobtracker_common.users import NotificationPreferences, PreferencesPatch

from api.auth import Caller, secured
from api.deps import services
from api.models import UserOut
from api.routes.common import caller, responses

router = Router()  # type: ignore[no-untyped-call]

UserIdPath = Annotated[
    str, Path(min_length=1, max_length=256, description="A user id (the token `sub`), or `me`.")
]


def _target(who: Caller, user_id: str) -> str:
    """The explicit preferences route says 403, not 404: the caller named the user themselves."""
    from jobtracker_common.errors import ForbiddenError

    if user_id in ("me", who.user_id):
        return who.user_id
    if not who.is_admin:
        raise ForbiddenError("you may only read and change your own notification preferences")
    return user_id


@router.get(
    "/users/me",
    summary="The caller's profile",
    security=secured(),
    responses=responses(200, "The caller."),
    tags=["users"],
)
def me() -> UserOut:
    return UserOut.of(services().user(caller(router)))


@router.get(
    "/users/me/notification-preferences",
    summary="The caller's notification preferences",
    security=secured(),
    responses=responses(200, "The preferences."),
    tags=["users"],
)
def my_preferences() -> NotificationPreferences:
    return services().user(caller(router)).preferences


@router.patch(
    "/users/me/notification-preferences",
    summary="Change some of the caller's notification preferences (keys left out keep their value)",
    security=secured(),
    responses=responses(200, "The preferences after the change.", 409, body=True),
    tags=["users"],
)
def patch_my_preferences(body: PreferencesPatch) -> NotificationPreferences:
    who = caller(router)
    services().user(who)
    return services().users.update_preferences(who.user_id, body).preferences


@router.get(
    "/users/<user_id>/notification-preferences",
    summary="A user's notification preferences (yourself, or anyone for admins)",
    security=secured(),
    responses=responses(200, "The preferences.", 404),
    tags=["users"],
)
def user_preferences(user_id: UserIdPath) -> NotificationPreferences:
    target = _target(caller(router), user_id)
    return services().users.get(target).preferences


@router.patch(
    "/users/<user_id>/notification-preferences",
    summary="Change a user's notification preferences (yourself, or anyone for admins)",
    security=secured(),
    responses=responses(200, "The preferences after the change.", 404, 409, body=True),
    tags=["users"],
)
def patch_user_preferences(user_id: UserIdPath, body: PreferencesPatch) -> NotificationPreferences:
    target = _target(caller(router), user_id)
    return services().users.update_preferences(target, body).preferences
