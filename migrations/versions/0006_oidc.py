"""business login (OIDC provider): client settings, authorization codes, issued tokens, signing keys,
back-channel logout outbox

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-30
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

import db


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('oidc_signing_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('key_uri', sa.String(length=400), nullable=False),
    sa.Column('public_jwk', sa.JSON(), nullable=False),
    sa.Column('state', sa.Enum('next', 'active', 'retired', name='signingkeystate', native_enum=False, length=40), nullable=False),
    sa.Column('created_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('activated_at', db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('keep_until', db.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oidc_signing_key')),
    sa.UniqueConstraint('kid', name=op.f('uq_oidc_signing_key_kid'))
    )
    op.create_index(op.f('ix_oidc_signing_key_state'), 'oidc_signing_key', ['state'], unique=False)
    op.create_table('oidc_client',
    sa.Column('business_system_id', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('redirect_uris', sa.JSON(), nullable=False),
    sa.Column('backchannel_logout_uri', sa.String(length=2000), nullable=False),
    sa.Column('post_logout_redirect_uris', sa.JSON(), nullable=False),
    sa.Column('initiate_login_uri', sa.String(length=2000), nullable=False),
    sa.Column('created_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['business_system_id'], ['business_system.id'], name=op.f('fk_oidc_client_business_system_id_business_system'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('business_system_id', name=op.f('pk_oidc_client'))
    )
    op.create_table('oidc_authorization_code',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_sha256', sa.String(length=64), nullable=False),
    sa.Column('business_system_id', sa.Integer(), nullable=False),
    sa.Column('operator_pk', sa.Integer(), nullable=False),
    sa.Column('redirect_uri', sa.String(length=2000), nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False),
    sa.Column('nonce', sa.String(length=255), nullable=False),
    sa.Column('code_challenge', sa.String(length=128), nullable=False),
    sa.Column('code_challenge_method', sa.String(length=10), nullable=False),
    sa.Column('auth_time', sa.Integer(), nullable=False),
    sa.Column('login_method', sa.String(length=40), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('operator_cert_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('used_at', db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['business_system_id'], ['business_system.id'], name=op.f('fk_oidc_authorization_code_business_system_id_business_system'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['operator_pk'], ['operator.id'], name=op.f('fk_oidc_authorization_code_operator_pk_operator'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oidc_authorization_code')),
    sa.UniqueConstraint('code_sha256', name=op.f('uq_oidc_authorization_code_code_sha256'))
    )
    op.create_index(op.f('ix_oidc_authorization_code_business_system_id'), 'oidc_authorization_code', ['business_system_id'], unique=False)
    op.create_index(op.f('ix_oidc_authorization_code_operator_pk'), 'oidc_authorization_code', ['operator_pk'], unique=False)
    op.create_index(op.f('ix_oidc_authorization_code_sid'), 'oidc_authorization_code', ['sid'], unique=False)
    op.create_table('oidc_logout_delivery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('business_system_id', sa.Integer(), nullable=False),
    sa.Column('operator_pk', sa.Integer(), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('created_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('delivered_at', db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('gave_up_at', db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=400), nullable=False),
    sa.ForeignKeyConstraint(['business_system_id'], ['business_system.id'], name=op.f('fk_oidc_logout_delivery_business_system_id_business_system'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['operator_pk'], ['operator.id'], name=op.f('fk_oidc_logout_delivery_operator_pk_operator'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oidc_logout_delivery'))
    )
    op.create_index(op.f('ix_oidc_logout_delivery_business_system_id'), 'oidc_logout_delivery', ['business_system_id'], unique=False)
    op.create_index(op.f('ix_oidc_logout_delivery_next_attempt_at'), 'oidc_logout_delivery', ['next_attempt_at'], unique=False)
    op.create_index(op.f('ix_oidc_logout_delivery_operator_pk'), 'oidc_logout_delivery', ['operator_pk'], unique=False)
    op.create_index(op.f('ix_oidc_logout_delivery_sid'), 'oidc_logout_delivery', ['sid'], unique=False)
    op.create_table('oidc_token',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('code_id', sa.Integer(), nullable=True),
    sa.Column('business_system_id', sa.Integer(), nullable=False),
    sa.Column('operator_pk', sa.Integer(), nullable=False),
    sa.Column('client_cert_sha256', sa.String(length=64), nullable=False),
    sa.Column('issued_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['business_system_id'], ['business_system.id'], name=op.f('fk_oidc_token_business_system_id_business_system'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['code_id'], ['oidc_authorization_code.id'], name=op.f('fk_oidc_token_code_id_oidc_authorization_code'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['operator_pk'], ['operator.id'], name=op.f('fk_oidc_token_operator_pk_operator'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_oidc_token'))
    )
    op.create_index(op.f('ix_oidc_token_business_system_id'), 'oidc_token', ['business_system_id'], unique=False)
    op.create_index(op.f('ix_oidc_token_code_id'), 'oidc_token', ['code_id'], unique=False)
    op.create_index(op.f('ix_oidc_token_operator_pk'), 'oidc_token', ['operator_pk'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_oidc_token_operator_pk'), table_name='oidc_token')
    op.drop_index(op.f('ix_oidc_token_code_id'), table_name='oidc_token')
    op.drop_index(op.f('ix_oidc_token_business_system_id'), table_name='oidc_token')
    op.drop_table('oidc_token')
    op.drop_index(op.f('ix_oidc_logout_delivery_sid'), table_name='oidc_logout_delivery')
    op.drop_index(op.f('ix_oidc_logout_delivery_operator_pk'), table_name='oidc_logout_delivery')
    op.drop_index(op.f('ix_oidc_logout_delivery_next_attempt_at'), table_name='oidc_logout_delivery')
    op.drop_index(op.f('ix_oidc_logout_delivery_business_system_id'), table_name='oidc_logout_delivery')
    op.drop_table('oidc_logout_delivery')
    op.drop_index(op.f('ix_oidc_authorization_code_sid'), table_name='oidc_authorization_code')
    op.drop_index(op.f('ix_oidc_authorization_code_operator_pk'), table_name='oidc_authorization_code')
    op.drop_index(op.f('ix_oidc_authorization_code_business_system_id'), table_name='oidc_authorization_code')
    op.drop_table('oidc_authorization_code')
    op.drop_table('oidc_client')
    op.drop_index(op.f('ix_oidc_signing_key_state'), table_name='oidc_signing_key')
    op.drop_table('oidc_signing_key')
