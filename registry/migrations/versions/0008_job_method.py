"""a fine-tuning job keeps its method (supervised, dpo or reinforcement, with its settings) as the client gave it

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("method", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.drop_column("method")
