"""apdl: the jti of each back-channel logout token accepted, so a replayed token is refused.

Revision ID: 0003_iso
Revises: 0002
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003_iso'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('apdl_logout_tokens_seen',
    sa.Column('jti', sa.String(length=255), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('forget_after', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('jti')
    )
    with op.batch_alter_table('apdl_logout_tokens_seen', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_logout_tokens_seen_forget_after'), ['forget_after'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('apdl_logout_tokens_seen', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apdl_logout_tokens_seen_forget_after'))
    op.drop_table('apdl_logout_tokens_seen')
