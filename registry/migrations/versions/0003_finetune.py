"""fine-tuning: files, jobs and their events, external models, upstream model shutdown dates

Revision ID: 0003
Revises: 0001
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "external_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("upstream", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("base_model", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("upstream", "name", name="uq_external_model"),
    )
    op.create_table(
        "upstream_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upstream", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("shutdown_date", sa.Date(), nullable=False),
        sa.Column("checked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("upstream", "model", name="uq_upstream_model"),
    )
    op.create_table(
        "finetune_file",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("upstream_file_id", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("upstream", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("filename", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("validation", sa.JSON(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("deleted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("finetune_file", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_finetune_file_team_id"), ["team_id"], unique=False)

    op.create_table(
        "finetune_job",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("upstream_job_id", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("upstream", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("training_file", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("upstream_training_file", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("validation_file", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("alias_id", sa.Integer(), nullable=True),
        sa.Column("alias", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("client_metadata", sa.JSON(), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("fine_tuned_model", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("canary_weight", sa.Integer(), nullable=True),
        sa.Column("promoted_version", sa.Integer(), nullable=True),
        sa.Column("promoted_weight", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("polled_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["alias_id"], ["alias.id"]),
        sa.ForeignKeyConstraint(["key_id"], ["api_key.id"]),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"]),
        sa.ForeignKeyConstraint(["training_file"], ["finetune_file.id"]),
        sa.ForeignKeyConstraint(["validation_file"], ["finetune_file.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_finetune_job_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_finetune_job_team_id"), ["team_id"], unique=False)

    op.create_table(
        "finetune_job_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["finetune_job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("finetune_job_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_finetune_job_event_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("finetune_job_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_finetune_job_event_job_id"))
    op.drop_table("finetune_job_event")
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_finetune_job_team_id"))
        batch_op.drop_index(batch_op.f("ix_finetune_job_status"))
    op.drop_table("finetune_job")
    with op.batch_alter_table("finetune_file", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_finetune_file_team_id"))
    op.drop_table("finetune_file")
    op.drop_table("upstream_model")
    op.drop_table("external_model")
