"""registry: soft-deleted aliases, and the version each alias version was made from

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("alias", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table("alias_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("based_on", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alias_version", schema=None) as batch_op:
        batch_op.drop_column("based_on")
    with op.batch_alter_table("alias", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
