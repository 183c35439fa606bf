"""apdl: terminal pairings and the card agent's APDU exchanges.

Revision ID: 0005_agent
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_agent'
down_revision = '0004_diag'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'apdl_terminal_pairings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('terminal_fingerprint', sa.String(length=64), nullable=False),
        sa.Column('terminal_name', sa.String(length=200), nullable=False),
        sa.Column('code_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('operator_session_id', sa.String(length=64), nullable=True),
        sa.Column('paired_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('code_hash'),
    )
    op.create_index('ix_apdl_terminal_pairings_terminal_fingerprint', 'apdl_terminal_pairings',
                    ['terminal_fingerprint'])
    op.create_index('ix_apdl_terminal_pairings_operator_session_id', 'apdl_terminal_pairings',
                    ['operator_session_id'])
    op.create_table(
        'apdl_agent_exchanges',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('terminal_fingerprint', sa.String(length=64), nullable=False),
        sa.Column('command', sa.Text(), nullable=False),
        sa.Column('response', sa.Text(), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_apdl_agent_exchanges_terminal_fingerprint', 'apdl_agent_exchanges',
                    ['terminal_fingerprint'])


def downgrade() -> None:
    op.drop_index('ix_apdl_agent_exchanges_terminal_fingerprint', table_name='apdl_agent_exchanges')
    op.drop_table('apdl_agent_exchanges')
    op.drop_index('ix_apdl_terminal_pairings_operator_session_id', table_name='apdl_terminal_pairings')
    op.drop_index('ix_apdl_terminal_pairings_terminal_fingerprint', table_name='apdl_terminal_pairings')
    op.drop_table('apdl_terminal_pairings')
