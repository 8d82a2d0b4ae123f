"""GraphQL test app (issue 17): decorated resolvers (the published style), a DataLoader that
counts its batch calls, subscriptions that record their cancellation. ``GQL_MODE``:
``production`` serves with ``GraphQLConfig.production()``, ``limits`` with small limits and tracing."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
from collections.abc import AsyncIterator

from cello import App, GraphQLConfig
from cello.graphql import DataLoader, Field, Mutation, Query, Subscription
from pydantic import BaseModel

app = App()
EVENTS: list[str] = []
BATCHES: list[list[int]] = []


class Role(enum.Enum):
    ADMIN = "admin"
    USER = "user"


@dataclasses.dataclass
class User:
    id: int
    name: str
    role: Role
    email: str | None = None

    @Field(description="Friends of the user (loaded through a DataLoader)")
    async def friends(self, info) -> list[User]:
        return await user_loader.load_many(FRIENDS.get(self.id, []))

    @Field
    def greeting(self, prefix: str = "Hello") -> str:
        return f"{prefix}, {self.name}"


class NewUser(BaseModel):
    name: str
    role: Role = Role.USER
    email: str | None = None


USERS = {
    1: User(1, "ada", Role.ADMIN, "ada@example.com"),
    2: User(2, "bob", Role.USER),
    3: User(3, "cy", Role.USER),
}
FRIENDS = {1: [2, 3], 2: [1], 3: [1, 2]}


async def load_users(keys: list[int]) -> list[User | Exception]:
    BATCHES.append(list(keys))
    return [USERS.get(k) or KeyError(f"no user {k}") for k in keys]


user_loader = DataLoader(load_users)


@Query
def hello(info, name: str = "world") -> str:
    """Says hello."""
    return f"Hello, {name}!"


@Query
async def user(info, id: int) -> User | None:
    return await user_loader.load(id) if id in USERS else None


@Query
def users(info, role: Role | None = None) -> list[User]:
    return [u for u in USERS.values() if role is None or u.role == role]


@Query
def boom(info) -> str | None:
    raise ValueError("resolver failed")


@Query
def batch_calls(info) -> list[list[int]]:
    return BATCHES


@Query
def events(info) -> list[str]:
    return EVENTS


@Query
def reset(info) -> bool:
    BATCHES.clear()
    EVENTS.clear()
    return True


@Query
def client_header(info) -> str | None:
    return info.context["request"].headers.get("x-test")


@Mutation
def create_user(info, user: NewUser) -> User:
    new = User(max(USERS) + 1, user.name, user.role, user.email)
    USERS[new.id] = new
    return new


@Subscription
async def count(info, to: int = 3, delay: float = 0.0) -> AsyncIterator[int]:
    try:
        for i in range(1, to + 1):
            yield i
            if delay:
                await asyncio.sleep(delay)
    finally:
        EVENTS.append(f"count-closed:{to}")


@Subscription
async def forever(info, tag: str) -> AsyncIterator[int]:
    i = 0
    try:
        while True:
            i += 1
            yield i
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        EVENTS.append(f"forever-cancelled:{tag}")
        raise
    finally:
        EVENTS.append(f"forever-closed:{tag}")


MODE = os.environ.get("GQL_MODE", "development")
if MODE == "production":
    config = GraphQLConfig.production()
elif MODE == "limits":
    config = GraphQLConfig(max_depth=3, max_complexity=6, tracing=True)
else:
    config = GraphQLConfig(batching=True)
app.enable_graphql(config)

if __name__ == "__main__":
    app.run()
