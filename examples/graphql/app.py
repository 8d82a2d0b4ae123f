"""A GraphQL API with Cello: decorated resolvers, a DataLoader, a mutation with an input type
and a subscription. `python examples/graphql/app.py`, then open http://127.0.0.1:8000/graphql
in a browser (GraphiQL, served offline) or subscribe on ws://127.0.0.1:8000/graphql."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import AsyncIterator

from cello import App, GraphQLConfig
from cello.graphql import DataLoader, Field, Mutation, Query, Subscription


class Status(enum.Enum):
    TODO = "todo"
    DONE = "done"


@dataclasses.dataclass
class Author:
    id: int
    name: str


@dataclasses.dataclass
class Task:
    id: int
    title: str
    status: Status
    author_id: int

    @Field(description="Loaded in one batch for every task of the response")
    async def author(self) -> Author:
        return await authors.load(self.author_id)


@dataclasses.dataclass
class NewTask:
    title: str
    author_id: int


AUTHORS = {1: Author(1, "Ada"), 2: Author(2, "Grace")}
TASKS = {1: Task(1, "write docs", Status.TODO, 1), 2: Task(2, "ship", Status.DONE, 2)}


async def load_authors(ids: list[int]) -> list[Author | Exception]:
    # One call per request level, whatever the number of tasks (a SQL `WHERE id = ANY($1)`).
    return [AUTHORS.get(i) or LookupError(f"no author {i}") for i in ids]


authors = DataLoader(load_authors)


@Query
def tasks(info, status: Status | None = None) -> list[Task]:
    """All tasks, optionally with one status."""
    return [t for t in TASKS.values() if status is None or t.status == status]


@Query
def task(info, id: int) -> Task | None:
    return TASKS.get(id)


@Mutation
def add_task(info, task: NewTask) -> Task:
    new = Task(max(TASKS) + 1, task.title, Status.TODO, task.author_id)
    TASKS[new.id] = new
    return new


@Mutation
def complete(info, id: int) -> Task | None:
    t = TASKS.get(id)
    if t is not None:
        t.status = Status.DONE
    return t


@Subscription
async def clock(info, ticks: int = 5, every: float = 1.0) -> AsyncIterator[int]:
    """Counts `ticks` times, one every `every` seconds (cancelled when the client leaves)."""
    for i in range(1, ticks + 1):
        yield i
        await asyncio.sleep(every)


app = App()
app.enable_graphql(GraphQLConfig.development())

if __name__ == "__main__":
    app.run()
