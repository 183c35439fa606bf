"""apdl initial schema: sessions, AP registry, availability, presets, tenant profiles, 利用者, installations, log.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('apdl_card_aps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('aid', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('provider_name', sa.String(length=100), nullable=False),
    sa.Column('area', sa.String(length=16), nullable=False),
    sa.Column('ap_type', sa.String(length=4), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('pin_policy', sa.String(length=16), nullable=False),
    sa.Column('pin_max_tries', sa.Integer(), nullable=False),
    sa.Column('business_id', sa.String(length=2), nullable=False),
    sa.Column('personalize_url', sa.String(length=2000), nullable=False),
    sa.Column('needs_standard_id', sa.Boolean(), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('aid')
    )
    op.create_table('apdl_custom_fields',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('max_length', sa.Integer(), nullable=False),
    sa.Column('required', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_code', 'label')
    )
    with op.batch_alter_table('apdl_custom_fields', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_custom_fields_tenant_code'), ['tenant_code'], unique=False)

    op.create_table('apdl_operation_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('entry_hash')
    )
    with op.batch_alter_table('apdl_operation_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_operation_log_tenant_code'), ['tenant_code'], unique=False)

    op.create_table('apdl_operation_log_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('apdl_operator_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('sid', sa.String(length=128), nullable=False),
    sa.Column('sub', sa.String(length=128), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('tenant_name', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('in_business_id', sa.String(length=128), nullable=False),
    sa.Column('permissions', sa.JSON(), nullable=False),
    sa.Column('acr', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_reason', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('apdl_operator_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_operator_sessions_sid'), ['sid'], unique=False)
        batch_op.create_index(batch_op.f('ix_apdl_operator_sessions_sub'), ['sub'], unique=False)
        batch_op.create_index(batch_op.f('ix_apdl_operator_sessions_tenant_code'), ['tenant_code'], unique=False)

    op.create_table('apdl_presets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('auto_load', sa.Boolean(), nullable=False),
    sa.Column('card_ap_ids', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_code', 'name')
    )
    with op.batch_alter_table('apdl_presets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_presets_tenant_code'), ['tenant_code'], unique=False)

    op.create_table('apdl_residents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('card_status', sa.String(length=16), nullable=False),
    sa.Column('card_identifier', sa.String(length=32), nullable=False),
    sa.Column('kana_family', sa.String(length=100), nullable=False),
    sa.Column('kana_given', sa.String(length=100), nullable=False),
    sa.Column('kanji_family', sa.String(length=100), nullable=False),
    sa.Column('kanji_given', sa.String(length=100), nullable=False),
    sa.Column('birth_date', sa.Date(), nullable=False),
    sa.Column('gender', sa.String(length=8), nullable=False),
    sa.Column('postal_code', sa.String(length=8), nullable=False),
    sa.Column('address1', sa.String(length=200), nullable=False),
    sa.Column('address2', sa.String(length=200), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('occupation', sa.String(length=100), nullable=False),
    sa.Column('custom', sa.JSON(), nullable=False),
    sa.Column('holder_request_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('holder_request_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_code', 'card_identifier')
    )
    with op.batch_alter_table('apdl_residents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_residents_tenant_code'), ['tenant_code'], unique=False)

    op.create_table('apdl_tenant_profiles',
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('municipality_code', sa.String(length=6), nullable=False),
    sa.PrimaryKeyConstraint('tenant_code')
    )
    op.create_table('apdl_installations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('resident_id', sa.Integer(), nullable=False),
    sa.Column('card_identifier', sa.String(length=32), nullable=False),
    sa.Column('card_ap_id', sa.Integer(), nullable=False),
    sa.Column('user_id_in_ap', sa.String(length=32), nullable=False),
    sa.Column('standard_id', sa.String(length=16), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_by', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['card_ap_id'], ['apdl_card_aps.id'], ),
    sa.ForeignKeyConstraint(['resident_id'], ['apdl_residents.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('card_ap_id', 'user_id_in_ap'),
    sa.UniqueConstraint('standard_id')
    )
    with op.batch_alter_table('apdl_installations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_installations_card_identifier'), ['card_identifier'], unique=False)
        batch_op.create_index(batch_op.f('ix_apdl_installations_resident_id'), ['resident_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_apdl_installations_tenant_code'), ['tenant_code'], unique=False)

    op.create_table('apdl_tenant_ap_availability',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('card_ap_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['card_ap_id'], ['apdl_card_aps.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_code', 'card_ap_id')
    )
    with op.batch_alter_table('apdl_tenant_ap_availability', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_tenant_ap_availability_tenant_code'), ['tenant_code'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('apdl_tenant_ap_availability', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apdl_tenant_ap_availability_tenant_code'))

    op.drop_table('apdl_tenant_ap_availability')
    with op.batch_alter_table('apdl_installations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apdl_installations_tenant_code'))
        batch_op.drop_index(batch_op.f('ix_apdl_installations_resident_id'))
        batch_op.drop_index(batch_op.f('ix_apdl_installations_card_identifier'))

    op.drop_table('apdl_installations')
    op.drop_table('apdl_tenant_profiles')
    with op.batch_alter_table('apdl_residents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apdl_residents_tenant_code'))

    op.drop_table('apdl_residents')
    with op.batch_alter_table('apdl_presets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apdl_presets_tenant_code'))

    op.drop_table('apdl_presets')
    with op.batch_alter_table('apdl_operator_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apdl_operator_sessions_tenant_code'))
        batch_op.drop_index(batch_op.f('ix_apdl_operator_sessions_sub'))
        batch_op.drop_index(batch_op.f('ix_apdl_operator_sessions_sid'))

    op.drop_table('apdl_operator_sessions')
    op.drop_table('apdl_operation_log_head')
    with op.batch_alter_table('apdl_operation_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apdl_operation_log_tenant_code'))

    op.drop_table('apdl_operation_log')
    with op.batch_alter_table('apdl_custom_fields', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apdl_custom_fields_tenant_code'))

    op.drop_table('apdl_custom_fields')
    op.drop_table('apdl_card_aps')

