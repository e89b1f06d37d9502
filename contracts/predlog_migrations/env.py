"""Alembic's environment for the prediction log: only on the connection `apply_schema` opened (one
transaction, under its lock), never from an ini file or a URL of its own."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the prediction log's migrations with contracts.predlog_migrations.apply_schema")
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
