"""stored chat completions: the stored responses' ownership table holds every kind of stored object (stored_object,
with the object's kind and, for chat completions, the metadata the list filters on)

Revision ID: 0009
Revises: 0007
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("stored_response", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stored_response_team_id"))
    op.rename_table("stored_response", "stored_object")
    with op.batch_alter_table("stored_object", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False, server_default="response")
        )
        batch_op.add_column(sa.Column("meta", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_stored_object_team_id"), ["team_id"], unique=False)
    with op.batch_alter_table("stored_object", schema=None) as batch_op:
        batch_op.alter_column("kind", server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM stored_object WHERE kind <> 'response'")
    with op.batch_alter_table("stored_object", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stored_object_team_id"))
        batch_op.drop_column("meta")
        batch_op.drop_column("kind")
    op.rename_table("stored_object", "stored_response")
    with op.batch_alter_table("stored_response", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stored_response_team_id"), ["team_id"], unique=False)
