"""apdl: the terminal registry (端末管理); a pairing names the registered terminal it was made for.

Revision ID: 0007_terminals
Revises: 0006_ux
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_terminals'
down_revision = '0006_ux'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'apdl_terminals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tenant_code', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('organization', sa.String(length=200), nullable=False),
        sa.Column('pinned_fingerprint', sa.String(length=64), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('registered_by', sa.String(length=200), nullable=False),
        sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('changed_by', sa.String(length=200), nullable=False),
        sa.Column('changed_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('tenant_code', 'name'),
        sa.UniqueConstraint('organization', 'name'),
    )
    op.create_index('ix_apdl_terminals_tenant_code', 'apdl_terminals', ['tenant_code'])
    # Pairing codes of before the registry name no registered terminal: they pair nothing (and expire in minutes).
    with op.batch_alter_table('apdl_terminal_pairings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('terminal_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_apdl_terminal_pairings_terminal_id', ['terminal_id'])
        batch_op.create_foreign_key('fk_apdl_terminal_pairings_terminal_id', 'apdl_terminals',
                                    ['terminal_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('apdl_terminal_pairings', schema=None) as batch_op:
        batch_op.drop_constraint('fk_apdl_terminal_pairings_terminal_id', type_='foreignkey')
        batch_op.drop_index('ix_apdl_terminal_pairings_terminal_id')
        batch_op.drop_column('terminal_id')
    op.drop_index('ix_apdl_terminals_tenant_code', table_name='apdl_terminals')
    op.drop_table('apdl_terminals')
