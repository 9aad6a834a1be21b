-- The template revision a message is rendered with (fixed when the campaign starts or the trigger
-- fires; a row from before this column gets its revision at its first claim), so a resend, "view
-- in browser" and a revision made mid-campaign never change what a recipient was sent.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS template_revision integer;
