"""the Responses API: which team owns a stored response (and its upstream, alias and target)

Revision ID: 0007
Revises: 0008 (0008, the fine-tuning job's method, was committed after 0006 while this one was being written;
it comes after it to keep one head)
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "stored_response",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("upstream", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("alias", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("stored_response", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stored_response_team_id"), ["team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stored_response", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stored_response_team_id"))
    op.drop_table("stored_response")
