"""one head again (merges 0002, 0003 and 0004); the token counts of the system prompts aliases inject

Revision ID: 0005
Revises: 0002, 0003, 0004
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = ("0002", "0003", "0004")


def upgrade() -> None:
    op.create_table(
        "system_prompt_count",
        sa.Column("prompt_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("encoding", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("exact", sa.Boolean(), nullable=False),
        sa.Column("counted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("prompt_sha256", "encoding"),
    )


def downgrade() -> None:
    op.drop_table("system_prompt_count")
